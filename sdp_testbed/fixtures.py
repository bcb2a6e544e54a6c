"""The fixture repositories' file sets and the stand-ins they talk to, in one import.

- `go_service_files` — the small Go HTTP service (see `go_service`);
- `build_module_cache` — an offline GOMODCACHE holding its dependency (see `gomodcache`);
- `gateway_files` — the PHP gateway "erangel" (see `erangel`);
- `OcpStandIn` — a local HTTP server standing in for an OCP service (see `ocp`).

Each lives in its own small module; this one only gathers them.
"""

from __future__ import annotations

from sdp_testbed.erangel import CONFIG_PATH as GATEWAY_CONFIG_PATH
from sdp_testbed.erangel import gateway_files
from sdp_testbed.go_service import GREET_MODULE, GREET_VERSION, Dependency, go_service_files
from sdp_testbed.gomodcache import build_module_cache, write_module_proxy
from sdp_testbed.ocp import OcpStandIn

__all__ = [
    "GATEWAY_CONFIG_PATH",
    "GREET_MODULE",
    "GREET_VERSION",
    "Dependency",
    "OcpStandIn",
    "build_module_cache",
    "gateway_files",
    "go_service_files",
    "write_module_proxy",
]
