"""sdp-node: the agent on each VM that does SDP's git, go build, docker and gateway work."""

__version__ = "0.1.0"
