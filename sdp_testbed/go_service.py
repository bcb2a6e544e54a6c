"""File sets of the fixture Go HTTP service and of its one tiny dependency.

`go_service_files` returns the tree of module `example.invalid/<service>`: it listens on
`:$PORT` (default 8080), after `start_delay_ms` (or exits at once, `exit_at_once`); `GET
/healthz` answers 200 "ok" (500 when built unhealthy); `GET /peer/<name>` passes through the
answer of `http://<name>:$PORT/` (another service of its sandbox, by Docker DNS); every
other path answers JSON `{"service", "revision", "path", "env": {"SDP_SANDBOX"}}` (plus
`"greeting"` when it uses the dependency); with `calls`, `GET /call/<NAME>/<rest>` forwards to
`$<NAME>_URL/<rest>` and answers what came back; with `hungry`, `GET /alloc?mb=N` keeps N MiB
more allocated and `GET /crash` makes it exit with code 3. The revision is a constant in the
source, so an answer proves which commit was built; nothing injected at run time can fake it.

The go.mod says `go 1.19`: Debian's Go is 1.19, which rejects a three-part `go` line.

`dependency` adds an import of `example.invalid/greet` v1.0.0: "vendor" ships it in
`vendor/` (builds offline with `-mod=vendor`), "modcache" expects it in the module cache
(`gomodcache.build_module_cache`); both carry a go.sum with its real h1: hashes.
"""

from __future__ import annotations

import re
from typing import Literal

from sdp_testbed import gomodcache

__all__ = ["GREET_MODULE", "GREET_VERSION", "Dependency", "go_service_files", "go_string"]

GREET_MODULE = gomodcache.GREET_MODULE
GREET_VERSION = gomodcache.GREET_VERSION

Dependency = Literal["none", "vendor", "modcache"]

_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")

_MAIN_GO = """\
package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"time"
{extra_imports})

const service = {service}

// revision names the commit this source belongs to; the fixture changes it per commit.
const revision = {revision}

const healthy = {healthy}
{extra_globals}

// startDelay: how long it takes before it listens; exitAtOnce: it dies before listening.
const startDelay = {start_delay_ms} * time.Millisecond

const exitAtOnce = {exit_at_once}

func main() {{
	port := os.Getenv("PORT")
	if port == "" {{
		port = "8080"
	}}
	if exitAtOnce {{
		log.Fatalf("%s %s: cannot start (exits at once, on purpose)", service, revision)
	}}
	time.Sleep(startDelay)
	mux := http.NewServeMux()
	// GET /peer/<name>: the answer of http://<name>:$PORT/ (another service of the sandbox,
	// by Docker DNS), passed through with its status.
	mux.HandleFunc("/peer/", func(w http.ResponseWriter, r *http.Request) {{
		name := r.URL.Path[len("/peer/"):]
		answer, err := http.Get("http://" + name + ":" + port + "/")
		if err != nil {{
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}}
		defer answer.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(answer.StatusCode)
		io.Copy(w, answer.Body)
	}})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {{
		if !healthy {{
			http.Error(w, "unhealthy", http.StatusInternalServerError)
			return
		}}
		w.Write([]byte("ok"))
	}})
{extra_handlers}	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {{
		answer := map[string]interface{{}}{{
			"service":  service,
			"revision": revision,
			"path":     r.URL.Path,
			"env":      map[string]string{{"SDP_SANDBOX": os.Getenv("SDP_SANDBOX")}},
		}}
{extra_fields}		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(answer)
	}})
	log.Printf("%s %s listening on :%s", service, revision, port)
	log.Fatal(http.ListenAndServe(":"+port, mux))
}}
"""

_GREET_IMPORT = f'\n\t"{GREET_MODULE}"\n'
_GREET_FIELD = '\t\tanswer["greeting"] = greet.Hello(service)\n'
# `/call/<NAME>/<rest>` asks the service the container's `<NAME>_URL` points at for `/<rest>`
# and answers {"called", "url", "status", "answer"}: how a service reaches another by the
# variables SDP injects.
_CALLS_IMPORTS = '\t"strings"\n'  # "io" is imported by every service now
_CALLS_HANDLER = """\
	mux.HandleFunc("/call/", func(w http.ResponseWriter, r *http.Request) {
		parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/call/"), "/", 2)
		rest := ""
		if len(parts) == 2 {
			rest = parts[1]
		}
		url := os.Getenv(parts[0] + "_URL")
		answer := map[string]interface{}{"called": parts[0], "url": url}
		if url == "" {
			answer["error"] = "no " + parts[0] + "_URL"
		} else if response, err := http.Get(url + "/" + rest); err != nil {
			answer["error"] = err.Error()
		} else {
			body, _ := io.ReadAll(response.Body)
			response.Body.Close()
			answer["status"] = response.StatusCode
			var parsed interface{}
			if json.Unmarshal(body, &parsed) == nil {
				answer["answer"] = parsed
			} else {
				answer["answer"] = string(body)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(answer)
	})
"""
# `/alloc?mb=N` allocates N MiB more and keeps it (every page written, so it is resident);
# `/crash` answers, then exits with code 3: what a memory-hungry or crashing service does.
_HUNGRY_IMPORTS = '\t"strconv"\n'  # "time" is imported by every service now (startDelay)
_HUNGRY_GLOBALS = "\nvar hoard [][]byte\n"
_HUNGRY_HANDLERS = """\
	mux.HandleFunc("/alloc", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		for i := 0; i < mb; i++ {
			block := make([]byte, 1<<20)
			for j := range block {
				block[j] = byte(j)
			}
			hoard = append(hoard, block)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int{"allocated_mb": len(hoard)})
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("crashing"))
		go func() {
			time.Sleep(50 * time.Millisecond)
			os.Exit(3)
		}()
	})
"""
_COMPILE_ERROR = "\nthis line is not Go and breaks the build\n"


def go_service_files(
    *,
    service: str,
    revision: str,
    healthy: bool = True,
    compile_error: bool = False,
    dependency: Dependency = "none",
    calls: bool = False,
    hungry: bool = False,
    exit_at_once: bool = False,
    start_delay_ms: int = 0,
) -> dict[str, bytes]:
    """The files of the fixture service at one revision, path -> content. ``exit_at_once``:
    the binary exits (code 1) before it listens; ``start_delay_ms``: it listens only after
    that long (a slow start)."""
    if not _SERVICE_NAME.fullmatch(service):
        raise ValueError(f"service name {service!r} is not a valid module path element")
    uses_greet = dependency != "none"
    main_go = _MAIN_GO.format(
        extra_imports=(_GREET_IMPORT if uses_greet else "") + (_CALLS_IMPORTS if calls else "")
        + (_HUNGRY_IMPORTS if hungry else ""),
        extra_handlers=(_CALLS_HANDLER if calls else "") + (_HUNGRY_HANDLERS if hungry else ""),
        service=go_string(service),
        revision=go_string(revision),
        healthy="true" if healthy else "false",
        extra_globals=_HUNGRY_GLOBALS if hungry else "",
        start_delay_ms=int(start_delay_ms),
        exit_at_once="true" if exit_at_once else "false",
        extra_fields=_GREET_FIELD if uses_greet else "",
    )
    if compile_error:
        main_go += _COMPILE_ERROR
    files = {
        "go.mod": _go_mod(service, uses_greet=uses_greet).encode(),
        "main.go": main_go.encode(),
        ".gitignore": b"/app-*\n",
    }
    if uses_greet:
        files["go.sum"] = gomodcache.greet_go_sum().encode()
    if dependency == "vendor":
        files.update(_vendor_files())
    return files


def go_string(text: str) -> str:
    """`text` as a Go interpreted string literal (Go rejects JSON's surrogate escapes)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"lone surrogate in {text!r} has no Go spelling")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _go_mod(service: str, *, uses_greet: bool) -> str:
    text = f"module example.invalid/{service}\n\ngo 1.19\n"
    if uses_greet:
        text += f"\nrequire {GREET_MODULE} {GREET_VERSION}\n"
    return text


def _vendor_files() -> dict[str, bytes]:
    files = {
        f"vendor/{GREET_MODULE}/{name}": content
        for name, content in gomodcache.greet_module_files().items()
        if name != "go.mod"
    }
    files["vendor/modules.txt"] = (
        f"# {GREET_MODULE} {GREET_VERSION}\n## explicit; go 1.19\n{GREET_MODULE}\n"
    ).encode()
    return files
