"""The agent's exceptions: a small hierarchy whose messages say what to change.

``NodeError`` is the root. Each carries an HTTP status and a stable ``code`` for the wire; the
API turns any ``NodeError`` into ``{"error": {"code", "message"}}``. Errors of docker, dulwich
and subprocesses are translated where those are called (``raise ... from e``); their texts are
redacted before they leave the agent, like every event.
"""

from __future__ import annotations


class NodeError(Exception):
    """Something the caller can act on."""

    status = 500
    code = "node_error"


class BadRequest(NodeError):
    status = 400
    code = "bad_request"


class Unauthorized(NodeError):
    status = 401
    code = "unauthorized"


class NotFound(NodeError):
    status = 404
    code = "not_found"


class Conflict(NodeError):
    """The request collides with something: a lease, a foreign container, a port in use."""

    status = 409
    code = "conflict"


class AuthenticationFailed(NodeError):
    """The remote refused the git credentials (LOGIN FAILED)."""

    status = 403
    code = "authentication_failed"


class GitError(NodeError):
    status = 502
    code = "git_error"


class BuildError(NodeError):
    code = "build_failed"

    def __init__(self, message: str, *, output: list[str] | None = None) -> None:
        super().__init__(message)
        self.output = output or []
        """the build's last output lines (another deploy waiting for the same build shows
        them in its own log)"""


class ImageMissing(NodeError):
    code = "image_missing"


class ContainerError(NodeError):
    code = "container_failed"


class HealthCheckFailed(ContainerError):
    """The new container never answered its health path 2xx often enough in time."""

    code = "unhealthy"

    def __init__(self, message: str, *, answer: str = "") -> None:
        super().__init__(message)
        self.answer = answer
        """the health path's last answer ("HTTP 500", "connection refused", ...)"""


class CrashedOnStart(HealthCheckFailed):
    """The new container exited (or was restarted by Docker) before it was healthy."""

    code = "crashed_on_start"


class RouteConfigError(NodeError):
    """A route table cannot be read or written safely (bad value, unknown key, symlink)."""

    status = 400
    code = "route_config"
