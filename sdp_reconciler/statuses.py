"""The status vocabulary (DESIGN §8), as Enums: written by the pass (``apply.status``), read
by ``sdp-reconcile status`` and the page. ``StrEnum``: a value is its text in SQLite, JSON and
the terminal, so what is stored and shown is unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class Sync(StrEnum):
    """Does the node run what the state says?"""

    IN_SYNC = "InSync"
    OUT_OF_SYNC = "OutOfSync"


class Health(StrEnum):
    """How what runs is doing, best first (a sandbox is as healthy as its worst part)."""

    HEALTHY = "Healthy"
    SUSPENDED = "Suspended"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"


HEALTH_ORDER = list(Health)


class Reason(StrEnum):
    """Why a row has its sync and health (CamelCase, as Flux and Argo CD name theirs)."""

    UP_TO_DATE = "UpToDate"
    DEPLOYED = "Deployed"
    RESTARTED = "Restarted"
    STARTED = "Started"
    SUSPENDED = "Suspended"
    EXPIRED = "Expired"
    RETIRED = "Retired"
    ROUTED_TO_TARGET = "RoutedToTarget"
    ROUTED_TO_OCP = "RoutedToOCP"
    CHANGES_PENDING = "ChangesPending"
    STATE_PROBLEM = "StateProblem"
    DEPLOY_FAILED = "DeployFailed"
    ROUTES_FAILED = "RoutesFailed"
    CONTAINER_MISSING = "ContainerMissing"
    CONTAINER_STOPPED = "ContainerStopped"
    HEALTH_CHECK_FAILING = "HealthCheckFailing"
    RESTARTING = "Restarting"
    CRASH_LOOPING = "CrashLooping"
    MEMORY_HIGH = "MemoryHigh"
    CPU_HIGH = "CpuHigh"
    BUILD_FAILED = "BuildFailed"
    """the three of a remembered failure: ``sdp_node.protocol.FailureReason``'s values"""
    CRASHED_ON_START = "CrashedOnStart"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    UNAUTHORISED = "Unauthorised"
    READY = "Ready"
    """a data service as the state wants it"""
    MISSING = "Missing"
    INCOMPLETE = "Incomplete"
    DATA_FAILED = "DataFailed"
