"""An INFRA node's agent work: observe its data services and run the data steps of a plan.

``DataAgent`` stands where ``Converger`` stands on MICRO and GATEWAY nodes: the API hands it
each operation, it runs the steps one after another and emits one result per step, with the
data service as the step left it. A step whose server this node does not manage, or a
container step, fails with a message that says so; a failed step never stops the next one.
"""

from __future__ import annotations

from typing import assert_never

from sdp_node.config import NodeConfig
from sdp_node.data.markers import Owner
from sdp_node.data.pgclone import PostgresData
from sdp_node.data.rabbitmq import RabbitmqData
from sdp_node.data.redisacl import RedisData
from sdp_node.errors import BadRequest, NodeError
from sdp_node.operations import Operation
from sdp_node.protocol import (
    DATA_STEP_TYPES,
    ApplyRequest,
    CaptureDatabase,
    DataServerInfo,
    DataSourceInfo,
    DataStep,
    DeployState,
    DropCapturedSource,
    DropDatabase,
    DropRabbitmqVhost,
    DropRedisUser,
    EnsureDatabase,
    EnsureRabbitmqVhost,
    EnsureRedisUser,
    ObservedDataService,
    RecloneDatabase,
    Step,
    StepResult,
)
from sdp_node.steps import StepContext, StepFailed

DataObservation = tuple[list[DataServerInfo], list[DataSourceInfo], list[ObservedDataService]]


class DataAgent:
    def __init__(self, config: NodeConfig) -> None:
        assert config.data is not None, "an INFRA node's config has data servers"
        owner = Owner(instance=config.installation, node=config.name)
        names = config.names
        data = config.data
        self.postgresql = PostgresData(data.postgresql, names=names, owner=owner) \
            if data.postgresql else None
        self.redis = RedisData(data.redis, names=names, owner=owner) if data.redis else None
        self.rabbitmq = RabbitmqData(data.rabbitmq, names=names, owner=owner) \
            if data.rabbitmq else None

    def observe(self) -> DataObservation:
        servers: list[DataServerInfo] = []
        sources: list[DataSourceInfo] = []
        services: list[ObservedDataService] = []
        if self.postgresql is not None:
            server, found, made = self.postgresql.observe()
            servers.append(server)
            sources += found
            services += made
        for part in (self.redis, self.rabbitmq):
            if part is not None:
                server, made = part.observe()
                servers.append(server)
                services += made
        return servers, sources, services

    # -- running a plan --------------------------------------------------------------------------

    def run(self, operation: Operation, request: ApplyRequest) -> None:
        try:
            for step in request.steps:
                context = StepContext(operation, step.step_id, None)
                operation.emit("result", step_id=step.step_id, result=self._run_step(step,
                                                                                      context))
        finally:
            operation.finish()

    def _run_step(self, step: Step, context: StepContext) -> StepResult:
        try:
            if not isinstance(step, DATA_STEP_TYPES):
                raise BadRequest(f"step {step.action!r} runs containers; an INFRA node runs "
                                 "only data steps")
            return self._dispatch(step, context)
        except StepFailed as e:
            return self._failed(step, context, e.message, e.tail)
        except NodeError as e:
            return self._failed(step, context, str(e), list(context.tail))
        except Exception as e:  # reported as the step's failure, never lost
            message = f"internal error: {type(e).__name__}: {e}"
            return self._failed(step, context, message, list(context.tail))

    def _failed(self, step: Step, context: StepContext, message: str, tail: list[str])\
            -> StepResult:
        context.state(DeployState.FAILED, message)
        return StepResult(step_id=step.step_id, action=step.action, ok=False,
                          state=DeployState.FAILED, changed=False, stage=context.current,
                          message=message, output_tail=tail)

    def _dispatch(self, step: DataStep, context: StepContext) -> StepResult:
        match step:
            case EnsureDatabase() | RecloneDatabase():
                changed, service = self._postgresql().ensure(step, context)
                return self._done(step, context, changed, service)
            case DropDatabase():
                return self._done(step, context, self._postgresql().drop(step, context), None)
            case CaptureDatabase():
                changed, service = self._postgresql().capture(step, context)
                return self._done(step, context, changed, service)
            case DropCapturedSource():
                return self._done(step, context, self._postgresql().drop_source(step, context),
                                  None)
            case EnsureRedisUser():
                changed, service = self._redis().ensure(step, context)
                return self._done(step, context, changed, service)
            case DropRedisUser():
                return self._done(step, context, self._redis().drop(step, context), None)
            case EnsureRabbitmqVhost():
                changed, service = self._rabbitmq().ensure(step, context)
                return self._done(step, context, changed, service)
            case DropRabbitmqVhost():
                return self._done(step, context, self._rabbitmq().drop(step, context), None)
            case _:
                assert_never(step)

    @staticmethod
    def _done(step: DataStep, context: StepContext, changed: bool,
              service: ObservedDataService | None) -> StepResult:
        state = DeployState.RUNNING if service is not None else DeployState.REMOVED
        context.state(state)
        return StepResult(step_id=step.step_id, action=step.action, ok=True, state=state,
                          changed=changed, data_service=service,
                          message=(service.problem or "") if service else "")

    def _postgresql(self) -> PostgresData:
        if self.postgresql is None:
            raise BadRequest("this INFRA node manages no PostgreSQL server (node.yaml "
                             "data.postgresql)")
        return self.postgresql

    def _redis(self) -> RedisData:
        if self.redis is None:
            raise BadRequest("this INFRA node manages no Redis server (node.yaml data.redis)")
        return self.redis

    def _rabbitmq(self) -> RabbitmqData:
        if self.rabbitmq is None:
            raise BadRequest("this INFRA node manages no RabbitMQ server (node.yaml "
                             "data.rabbitmq)")
        return self.rabbitmq


__all__ = ["DataAgent", "DataObservation"]
