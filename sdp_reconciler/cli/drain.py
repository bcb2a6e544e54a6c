"""``sdp-reconcile drain NODE``: move everything a MICRO node runs to other nodes, without
dropping a request, and keep it empty.

The drain is state: ``drained: true`` on the node in nodes.yaml (so every later pass, and
placement, agree that nothing runs there), written like the other editing commands (round-trip,
comments kept, the whole state checked). Then one pass moves each service of the node through
the health-gated switch across nodes (``planner/moves.py``). Before anything is applied the
pass is checked: the node must be reachable, and every service it runs must have somewhere to
go (not pinned there, another node serving its repository with room, its sandbox not held back
by a problem); otherwise nodes.yaml is put back as it was, nothing is applied, and the error
names each reason. ``--dry-run`` shows the plan and puts nodes.yaml back; ``--undo`` takes the
mark off (nothing moves back on its own: new services may be placed there again).
"""

from __future__ import annotations

import argparse

from sdp_node.protocol import LABEL_KIND, LABEL_SANDBOX, LABEL_SERVICE
from sdp_reconciler.apply.reconcile import Prepared, prepare
from sdp_reconciler.cli.commands import _say, apply_prepared
from sdp_reconciler.cli.editing import NEXT
from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History
from sdp_reconciler.paths import history_path, state_dir
from sdp_reconciler.state import editing


def services_on(prepared: Prepared, node: str) -> list[tuple[str, str]]:
    """(sandbox, service) of the service containers this installation runs on ``node``."""
    view = prepared.world.nodes[node]
    if view.observation is None:
        return []
    return sorted({
        (c.labels.get(LABEL_SANDBOX, ""), c.labels.get(LABEL_SERVICE, ""))
        for c in view.observation.containers
        if not c.aside and c.labels.get(LABEL_KIND) == "service"
    })


def drain_refusals(prepared: Prepared, node: str) -> list[str]:
    """Why the pass would not empty ``node`` (nothing: it can be drained)."""
    view = prepared.world.nodes[node]
    if not view.reachable:
        return [f"node {node} is unreachable ({view.unreachable}): a drain retires each "
                "service on the node once it runs elsewhere, which needs the node; its "
                "sandboxes are left as they run until it answers again"]
    plan = prepared.plan
    why: list[str] = []
    for sandbox, service in services_on(prepared, node):
        resolved = prepared.sandboxes.get(sandbox)
        if sandbox in prepared.held:
            why.append(f"sandbox {sandbox} is held (a change to it is not authorised, "
                       "docs/access.md): it is left as it runs")
            continue
        if resolved is None or service not in resolved.services \
                or not resolved.services[service].spec.deployed:
            continue  # no longer wanted: the pass removes it anyway
        placed = prepared.placements.get((sandbox, service))
        if sandbox in plan.blocked or placed is None or placed.node == node:
            files = {resolved.file, *(s.origin.file for s in resolved.services.values())}
            if resolved.gateway is not None:
                files.add(resolved.gateway.origin.file)
            problems = [str(p) for p in plan.problems if p.location.file in files]
            why.append(f"sandbox {sandbox} service {service}: "
                       + ("; ".join(problems) or "it has nowhere else to go"))
    return why


def cmd_drain(args: argparse.Namespace) -> int:
    root = state_dir(args)
    if args.undo:
        path, _ = editing.set_drained(root, args.node, drained=False)
        print(f"wrote {path}: node {args.node} may be given new services again (nothing "
              f"moves back on its own); {NEXT}")
        return 0
    path, before = editing.set_drained(root, args.node, drained=True)
    history = History(history_path(args))
    prepared: Prepared | None = None
    try:
        prepared = prepare(root, report=_say, history=history)
        refusals = drain_refusals(prepared, args.node)
        if refusals or args.dry_run:
            path.write_bytes(before)
        if refusals:
            raise SdpError(f"cannot drain node {args.node}: " + "; ".join(refusals)
                           + f". Nothing changed ({path.name} left as it was).")
        moving = services_on(prepared, args.node)
        if args.dry_run:
            print(prepared.plan.render())
            print(f"dry run: would move {len(moving)} service(s) off {args.node}; nothing "
                  f"written or changed")
            return 0
        status, _result = apply_prepared(args, prepared, history, mode="drain")
    except BaseException:
        if prepared is None:
            path.write_bytes(before)  # the pass could not even be planned
        raise
    finally:
        if prepared is not None:
            prepared.close()
        history.close()
    moved = ", ".join(f"{s}/{v}" for s, v in moving) or "nothing ran there"
    if status == 0:
        print(f"node {args.node} drained ({moved}); wrote {path}: commit and push it, so "
              "that every reconciler keeps the node empty")
    else:
        print(f"node {args.node} marked drained in {path} but not empty yet ({moved}): the "
              "next pass continues the move; commit and push it")
    return status
