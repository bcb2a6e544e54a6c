"""What should change, and why: placement, ports, container specs and the plan, as pure
functions from the resolved state and an observed ``World`` to a ``Plan`` value.

The way through it: ``placement.place`` and ``ports.allocate`` say where each part runs and on
which port; ``desired.desire`` joins them with the resolved sandboxes and the ``World`` into
one frozen value per thing a node should run (built once per pass, by ``apply.reconcile``);
``planning.plan`` compares those values with what the nodes report and returns the ``Plan``
(``plan.py``), which makes every decision the applier carries out.

May import: ``state`` values, ``sdp_node.protocol``/``naming``, ``errors``. No I/O at all — no
files, sockets, processes, databases or clocks it was not given (tests/planning/test_purity.py
and test_layers.py check it), and never ``observe``, ``apply``, ``cli`` or ``web``.
"""
