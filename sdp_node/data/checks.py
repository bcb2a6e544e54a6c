"""The checks every data step starts with: the names it carries are SDP's for its entry."""

from __future__ import annotations

from sdp_node.errors import BadRequest
from sdp_node.naming import name_problem


def check_names(what: str, *, sandbox: str, service: str, given: str, expected: str) -> None:
    """``sandbox`` and ``service`` are valid SDP names and ``given`` is SDP's name for them."""
    for label, value in (("sandbox", sandbox), ("service", service)):
        problem = name_problem(value)
        if problem:
            raise BadRequest(f"{label}: {problem}")
    if given != expected:
        raise BadRequest(f"{what} {given!r} is not SDP's name for sandbox {sandbox!r} entry "
                         f"{service!r} ({expected!r})")


__all__ = ["check_names"]
