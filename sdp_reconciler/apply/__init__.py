"""One reconcile pass: prepare (load, observe, plan) and run (carry out the plan through the
agents, record status and history, notify, sync the state checkout).

May import: ``state``, ``planner``, ``observe``, ``errors``, ``redaction``, ``history``. Carries
out what the planner decided and decides nothing itself. Never ``cli`` or ``web``.
"""
