"""How the ``<SERVICE>_URL`` variables are named (nodes.yaml ``service_url_variable``).

The values come from the planner's route table (``planner/routetable.py``); the names are
a setting of the state, checked when it loads. Pure.
"""

from __future__ import annotations

import re
from functools import lru_cache

DEFAULT_VARIABLE = "{SERVICE}_URL"
"""the default name of the variables: ``PAYMENT_URL`` for key ``payment``"""

PLACEHOLDER = "{SERVICE}"


@lru_cache(maxsize=4096)  # called for every key of every sandbox's table, every pass
def variable_name(pattern: str, key: str) -> str:
    """``{SERVICE}_URL`` and ``payment-api`` -> ``PAYMENT_API_URL``."""
    return pattern.replace(PLACEHOLDER, re.sub(r"[^A-Za-z0-9]", "_", key).upper())


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot name the variables, or None."""
    if pattern.count(PLACEHOLDER) != 1:
        return f"{pattern!r} must contain {PLACEHOLDER} exactly once (e.g. {DEFAULT_VARIABLE!r})"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", pattern.replace(PLACEHOLDER, "X")):
        return (f"{pattern!r} does not give valid environment variable names: use letters, "
                f"digits, '_' and {PLACEHOLDER}, not starting with a digit")
    return None


__all__ = ["DEFAULT_VARIABLE", "PLACEHOLDER", "pattern_problem", "variable_name"]
