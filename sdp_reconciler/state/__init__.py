"""What the state directory says: file models, loading with ``file:line:col``, the rules a
state must obey, templates resolved into one value per sandbox, and the reconciler host's own
configuration and trust.

May import: ``sdp_node.protocol``/``naming`` (the wire contract), ``access``, ``errors``,
``redaction``, ``history``. Never ``planner``, ``observe``, ``apply``, ``cli`` or ``web``.
Reads files and git; never talks to a node.
"""
