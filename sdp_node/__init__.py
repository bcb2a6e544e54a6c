"""sdp-node: the agent on each VM that does SDP's git, go build, docker and gateway work."""

__version__ = "0.1.0"

from sdp_node import pydanticplugins as _pydanticplugins

_pydanticplugins.refuse()  # before pydantic builds a validator: see the module
