"""Who may change what in the state: roles on the state repository (issue 13).

This package owns ``state/access.yaml`` (its model, schema and whole-file rules), the default
role → permission table, the mapping of a commit's changes to permissions (a semantic diff of
the YAML between a commit and its parents, read from git objects), the identity of a commit's
author (the author email, and an SSH signature checked with ``ssh-keygen -Y verify`` when
``require_signed_commits`` is on), where trust starts, and the resulting decision.

Layers, pure first:

* ``model``, ``permissions``, ``changes``, ``identity``, ``facts``, ``provenance``,
  ``judging``, ``effects``, ``decision``, ``render`` are pure: no file, socket, subprocess or
  git access (``tests/access/test_purity.py``).
* ``signatures`` runs ``ssh-keygen``; ``gitrange`` reads the state repository with dulwich.
* ``authorize`` is the integration surface (``authorize_range`` → ``AccessDecision``) and
  ``command`` is ``sdp-reconcile authorize``.

Imports allowed from the rest of SDP: ``sdp_reconciler.state.models`` (``Frozen``,
``SCHEMA_BASE``, ``url_problem``), ``sdp_reconciler.state.locations``,
``sdp_reconciler.state.sources``, ``sdp_reconciler.errors``, and (for validation messages only)
``sdp_reconciler.state.loading``. Nothing in the pass (reconcile, planning, applying, status)
or the page is imported here; they import this package. This ``__init__`` imports nothing, so
``loading`` can import ``access.model`` without a cycle.
"""
