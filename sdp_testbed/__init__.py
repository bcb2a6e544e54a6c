"""The one-machine testbed: what tests, the demo and benchmarks stand SDP up against.

Everything here is local to this machine: a dulwich git server with Basic auth on
127.0.0.1 (`gitserver`), bare repositories filled without a working tree (`repos`),
the fixture Go services and PHP gateway (`fixtures`), an OCP stand-in reachable from
containers (`ocp`), and runtime images made with `docker import`, never pulled
(`images`). Nothing in `sdp_node` or `sdp_reconciler` imports this package.
"""
