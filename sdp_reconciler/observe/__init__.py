"""What the nodes run: clients of the node agents (pinned to the host's configuration), the
credentials they need, and observing nodes and branch heads into a ``planner.world.World``.

May import: ``state``, ``planner`` values, ``sdp_node.protocol``/``naming``, ``errors``,
``redaction``. Never ``apply``, ``cli`` or ``web``.
"""
