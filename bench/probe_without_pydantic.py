"""Issue 15: what the ``--once`` import path would cost without pydantic, and the floor it
has with pydantic — a measurement to decide on, not a benchmark of SDP.

The import path of ``sdp-reconcile once`` is imported in fresh interpreters, interleaved:
``python -c pass``; in layers (pydantic's names alone; + the other libraries the pass cannot
do without; + SDP's pydantic model modules, whose validators are still deferred); as it is;
and with a *timing stub* of pydantic first on ``sys.path``. The stub is not pydantic and
validates nothing: its ``BaseModel`` is a plain class, ``Field``, ``ConfigDict`` and the
validator markers return what they are given, so the model modules import and nothing else
changes. The difference is what pydantic's import and its model classes cost; a pydantic-free
model layer would pay its own classes back (msgspec: ~1 ms for 100 Structs) plus validators
built on first use. The layers are the floor with pydantic: what the pass pays before it reads
a file or asks a node. Only imports are measured: the pass itself cannot run on the stub. No
Docker, no network.

    .venv/bin/python bench/probe_without_pydantic.py [--runs 21]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

STUB = {
    "pydantic/__init__.py": '''\
"""A timing stub, not pydantic (bench/probe_without_pydantic.py)."""
class _Any:
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return self
    def __getattr__(self, name): return _Any()
    def __getitem__(self, key): return self
class BaseModel:
    def __init_subclass__(cls, **kw): pass
    def __class_getitem__(cls, item): return cls
def ConfigDict(**kw): return kw
def Field(*a, **k): return a[0] if a else None
class GetCoreSchemaHandler(_Any): pass
class AfterValidator(_Any): pass
class BeforeValidator(_Any): pass
class WithJsonSchema(_Any): pass
class ValidationError(ValueError): pass
def model_validator(*a, **k): return lambda f: f
def field_validator(*a, **k): return lambda f: f
''',
    "pydantic/fields.py": "class FieldInfo: pass\n",
    "pydantic/plugin/__init__.py": "",
    "pydantic/plugin/_loader.py": "def get_plugins(): return ()\n_plugins = {}\n",
    "pydantic_core/__init__.py": "from pydantic import _Any\ncore_schema = _Any()\n",
}
PATH = "sdp_reconciler.cli.commands"
PYDANTIC = "from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError"
LIBRARIES = ("import argparse, concurrent.futures, hashlib, http.client, json, logging, msgspec, "
             "ruamel.yaml, sqlite3")
MODELS = "import sdp_node.protocol, sdp_reconciler.state.models, sdp_reconciler.state.hostconfig"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdp-pydantic-stub-") as folder:
        for name, text in STUB.items():
            (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / name).write_text(text)
        variants = {
            "python -c pass": "pass",
            "pydantic's names alone": PYDANTIC,
            "+ the other libraries the pass needs": f"{PYDANTIC}; {LIBRARIES}",
            "+ SDP's model modules (protocol, state)": f"{PYDANTIC}; {LIBRARIES}; {MODELS}",
            "the once path": f"import {PATH}",
            "the once path, pydantic stubbed out":
                f"import sys; sys.path.insert(0, {folder!r}); import {PATH}",
        }
        for code in variants.values():  # warm-up: the .pyc files, as an install has them
            subprocess.run([sys.executable, "-c", code], check=True)
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, code in variants.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([sys.executable, "-c", code], check=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(after.ru_utime - before.ru_utime
                                 + after.ru_stime - before.ru_stime)
    base = sorted(cpu["python -c pass"])
    middle = args.runs // 2
    print(f"{'imports, CPU ms':42} {'min':>7} {'median':>7} {'above python: min':>18} "
          f"{'median':>7}")
    for name, samples in cpu.items():
        ordered = sorted(samples)
        print(f"{name:42} {1000 * ordered[0]:7.1f} {1000 * ordered[middle]:7.1f} "
              f"{1000 * (ordered[0] - base[0]):18.1f} "
              f"{1000 * (ordered[middle] - base[middle]):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
