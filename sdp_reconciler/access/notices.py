"""Texts of the access layer that the pass needs before it judges anything (kept apart so
that a pass without ``access.yaml`` loads none of the judging modules)."""

NOT_ENFORCED = "no access.yaml: every change is authorised, as before roles (docs/access.md)"
