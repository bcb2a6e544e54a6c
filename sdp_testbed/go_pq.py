"""A fixture Go service that reads a row from its sandbox's database, with lib/pq vendored.

Go has no PostgreSQL driver in its standard library and the tests have no internet for Go
modules, so the driver comes from Debian: ``golang-github-lib-pq-dev`` (installed by
``scripts/setup``) puts lib/pq 1.10.7's source under ``/usr/share/gocode/src``, and
``row_reader_files`` copies its package and the two it imports (``oid``, ``scram``; tests and
the Kerberos ``auth/`` package left out) into the service's ``vendor/`` with a
``vendor/modules.txt``, so the agent's offline build (``-mod=vendor``, ``GOPROXY=off``) takes
it like any vendored module. Only the standard library is imported besides.

The service answers ``GET /healthz`` with ``ok`` and, on ``/row``, connects with ``DB_HOST``,
``DB_PORT``, ``DB_NAME``, ``DB_USER``, ``DB_PASSWORD`` and answers JSON ``{"service",
"revision", "database", "row"}``: the email of the last row of the snapshot's ``accounts``
table (``tests/support/data.make_snapshot``), or ``{"error"}`` with status 500. Other paths
answer ``{"service", "revision", "path"}``.
"""

from __future__ import annotations

from pathlib import Path

from sdp_testbed.go_service import go_string

LIB_PQ = "github.com/lib/pq"
LIB_PQ_VERSION = "v1.10.7"
LIB_PQ_SOURCE = Path("/usr/share/gocode/src") / LIB_PQ
LIB_PQ_COPYRIGHT = Path("/usr/share/doc/golang-github-lib-pq-dev/copyright")
_PACKAGES = ("", "oid", "scram")

_MAIN_GO = """\
package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"

	_ "github.com/lib/pq"
)

const service = {service}

const revision = {revision}

func dsn() string {{
	u := url.URL{{
		Scheme:   "postgres",
		User:     url.UserPassword(os.Getenv("DB_USER"), os.Getenv("DB_PASSWORD")),
		Host:     os.Getenv("DB_HOST") + ":" + os.Getenv("DB_PORT"),
		Path:     "/" + os.Getenv("DB_NAME"),
		RawQuery: "sslmode=disable&connect_timeout=5",
	}}
	return u.String()
}}

func row() (string, error) {{
	db, err := sql.Open("postgres", dsn())
	if err != nil {{
		return "", err
	}}
	defer db.Close()
	var email string
	err = db.QueryRow("SELECT email FROM accounts ORDER BY id DESC LIMIT 1").Scan(&email)
	return email, err
}}

func main() {{
	port := os.Getenv("PORT")
	if port == "" {{
		port = "8080"
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {{
		w.Write([]byte("ok"))
	}})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {{
		answer := map[string]interface{{}}{{"service": service, "revision": revision,
			"path": r.URL.Path}}
		if r.URL.Path == "/row" {{
			found, err := row()
			if err != nil {{
				w.WriteHeader(http.StatusInternalServerError)
				answer["error"] = fmt.Sprint(err)
			}} else {{
				answer["database"] = os.Getenv("DB_NAME")
				answer["row"] = found
			}}
		}}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(answer)
	}})
	log.Printf("%s %s listening on :%s", service, revision, port)
	log.Fatal(http.ListenAndServe(":"+port, mux))
}}
"""


def lib_pq_vendor_files() -> dict[str, bytes]:
    """lib/pq's package and the two it imports, as ``vendor/`` files, with modules.txt."""
    if not (LIB_PQ_SOURCE / "conn.go").is_file():
        raise FileNotFoundError(
            f"{LIB_PQ_SOURCE} does not hold lib/pq: install Debian's golang-github-lib-pq-dev "
            "(bash scripts/setup does)")
    files: dict[str, bytes] = {}
    for package in _PACKAGES:
        folder = LIB_PQ_SOURCE / package
        for source in sorted(folder.glob("*.go")):
            if not source.name.endswith("_test.go"):
                relative = f"{package}/{source.name}" if package else source.name
                files[f"vendor/{LIB_PQ}/{relative}"] = source.read_bytes()
    if LIB_PQ_COPYRIGHT.is_file():
        files[f"vendor/{LIB_PQ}/LICENSE"] = LIB_PQ_COPYRIGHT.read_bytes()
    listed = "".join(f"{LIB_PQ}/{p}\n" if p else f"{LIB_PQ}\n" for p in _PACKAGES)
    files["vendor/modules.txt"] = f"# {LIB_PQ} {LIB_PQ_VERSION}\n## explicit; go 1.13\n{listed}"\
        .encode()
    return files


def row_reader_files(*, service: str, revision: str) -> dict[str, bytes]:
    """The service's tree (module ``example.invalid/<service>``), path -> content."""
    go_mod = f"module example.invalid/{service}\n\ngo 1.19\n\nrequire {LIB_PQ} {LIB_PQ_VERSION}\n"
    main_go = _MAIN_GO.format(service=go_string(service), revision=go_string(revision))
    return {"go.mod": go_mod.encode(), "main.go": main_go.encode(), ".gitignore": b"/app-*\n",
            **lib_pq_vendor_files()}


__all__ = ["LIB_PQ", "LIB_PQ_SOURCE", "lib_pq_vendor_files", "row_reader_files"]
