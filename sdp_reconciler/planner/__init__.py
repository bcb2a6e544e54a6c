"""What should change, and why: placement, ports, container specs and the plan, as pure
functions from the resolved state and an observed ``World`` to a ``Plan`` value.

May import: ``state`` values, ``sdp_node.protocol``/``naming``, ``errors``. No I/O at all — no
files, sockets, processes, databases or clocks it was not given (tests/planning/test_purity.py
and test_layers.py check it), and never ``observe``, ``apply``, ``cli`` or ``web``.
"""
