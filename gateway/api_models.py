"""The REST API's JSON shapes as pydantic models: the one place that says what a Task, a LogLine, a Dataset ... looks
like in JSON. gateway/serializers.py builds them from the proto messages, the routes declare them as their response
models (so the OpenAPI document types every answer), and the console's TypeScript types are generated from that
document (scripts/gen_api_types.py).

Every field of a response model is required and nullable where the gateway sends null: the serializers always send
every key, so a client never has to guess whether a key may be missing. Request bodies are parsed by hand (a 400
naming the field, never FastAPI's 422; gateway/inputs.py), driven by the request models here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protos import common_pb2

# The statuses as the API names them ("running", ...), from the proto enum so a new status needs no change here;
# "unspecified" is a task that never got one, "unknown" a number from a newer control plane.
STATUS_NAMES = tuple(name.removeprefix("TASK_STATUS_").lower() for name in common_pb2.TaskStatus.keys())
TaskStatus = Literal[(*STATUS_NAMES, "unknown")]  # type: ignore[valid-type]

Timestamp = datetime | None  # ISO-8601 UTC ("...Z"); null when not set (an unset proto Timestamp is not 1970)
JsonObject = dict[str, Any]


class ApiModel(BaseModel):
    """A JSON shape the gateway sends."""


class RequestModel(BaseModel):
    """A JSON body: exactly these keys (gateway/inputs.py refuses others)."""

    model_config = ConfigDict(extra="forbid")


def _no_default(schema: dict[str, Any]) -> None:
    # An optional key without a value to show: absent means the server's choice (`default: null` would be a lie).
    schema.pop("default", None)


# --- errors -----------------------------------------------------------------------------------------------------------


class ErrorDetail(ApiModel):
    code: str = Field(description="machine-readable: invalid_argument, unauthenticated, permission_denied, not_found, "
                      "failed_precondition, resource_exhausted, unavailable, payload_too_large, internal, ...")
    message: str = Field(description="for people")
    field: str | None = Field(description="the input field at fault, when one is")


class ErrorResponse(ApiModel):
    """Every error the gateway answers (gateway/errors.py)."""

    error: ErrorDetail


# --- tasks ------------------------------------------------------------------------------------------------------------


class Progress(ApiModel):
    step: int
    total_steps: int
    percent: float
    eta_seconds: float | None
    epoch: float | None
    loss: float | None
    learning_rate: float | None
    stage: str | None = Field(description="a multi-stage trainer's current stage (KBAlign's annotation, clustering, "
                              "...); null while steps are the progress")
    stage_done: int
    stage_total: int


class TaskEvent(ApiModel):
    time: Timestamp
    from_status: TaskStatus
    to_status: TaskStatus
    reason: str
    message: str


class TaskAttempt(ApiModel):
    number: int
    agent_id: str | None
    devices: list[int]
    started_at: Timestamp
    ended_at: Timestamp
    status: TaskStatus | None = Field(description="how the attempt ended; null while it runs")
    reason: str | None
    resumed_from: str | None


class TaskNodePlacement(ApiModel):
    """One node of a multi-node attempt."""

    node: int = Field(description="0-based; the rendezvous runs on node 0's agent")
    agent_id: str
    devices: list[int]
    rank0: bool = Field(description="it runs global rank 0: reports the metrics and writes the model")
    status: TaskStatus | None = Field(description="how this node's run ended; null while it runs")


class Checkpoint(ApiModel):
    path: str
    step: int
    time: Timestamp
    attempt: int


class DataValidation(ApiModel):
    """The check of a task's paths and data at submit."""

    state: str = Field(description='"pending" while the task waits outside the queue for it, "passed" or "failed"')
    rows: int
    message: str


class Task(ApiModel):
    id: str
    type: str
    status: TaskStatus
    config: JsonObject
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp
    finished_at: Timestamp
    agent_id: str | None
    error: str | None
    error_details: str | None = Field(description="a failure's traceback (and the stderr around it), apart from "
                                      "`error`, the message")
    error_reason: str | None
    exit_code: int
    pid: int | None
    owner: str | None
    progress: Progress
    latest_metrics: JsonObject
    output_dir: str | None
    last_log_seq: int
    events: list[TaskEvent]
    priority: int = Field(description="higher runs first (then older first); changeable while queued")
    queue_position: int | None = Field(description="1-based while queued (and its data check passed), else null")
    devices: list[int] = Field(description="the device indices it is placed on (on agent_id); empty while queued")
    attempt: int = Field(description="1 for the first run; a resume or an agent-loss requeue starts the next")
    max_retries: int
    checkpoints: list[Checkpoint]
    attempts: list[TaskAttempt]
    validation: DataValidation | None
    published_model_sha256: str = Field(description="the final model's blob once published, \"\" until then: "
                                        "downloadable after its agent has gone")
    nodes: int = Field(description="the hosts (agents) it trains on together; more than 1: a multi-node gang")
    gpus_per_node: int = Field(description="devices on each node of a multi-node task (0: one-node task)")
    node_placements: list[TaskNodePlacement] = Field(description="where the current attempt's nodes run (empty for "
                                                     "a one-node task, and while queued)")


class TaskList(ApiModel):
    tasks: list[Task]
    total: int
    limit: int
    offset: int
    next_page_token: str | None = Field(description="pass as page_token for the next page; null on the last")


class LogLine(ApiModel):
    seq: int
    time: Timestamp
    stream: str
    text: str


class TaskLogs(ApiModel):
    task_id: str
    lines: list[LogLine]
    last_seq: int


class MetricPoint(ApiModel):
    """A point's own seq and time, then the values the trainer logged (step, loss, eval_loss, ...) as keys."""

    model_config = ConfigDict(extra="allow")

    seq: int
    time: Timestamp


class TaskMetrics(ApiModel):
    task_id: str
    points: list[MetricPoint]


class Deleted(ApiModel):
    deleted: str = Field(description="the id (or name) of what was deleted")


class LogStreamEnd(ApiModel):
    """`event: end` of the logs stream."""

    task_id: str


class EventStreamEnd(ApiModel):
    """`event: end` of the events stream: the task's final status."""

    task_id: str
    status: TaskStatus


# --- dry run, templates -----------------------------------------------------------------------------------------------


class ValidationProblem(ApiModel):
    line: int
    field: str
    message: str


class ValidationFailure(ApiModel):
    field: str | None
    message: str


class ValidationReport(ApiModel):
    ok: bool
    type: str
    rows: int
    problems: list[ValidationProblem] = Field(description="the first 20")
    stats: JsonObject
    error: ValidationFailure | None
    warnings: list[str]
    agent_id: str | None = Field(description="the agent the check ran on")


class Template(ApiModel):
    """A built-in task type (`builtin: true`) or a config a user saved (its config as `default_config`)."""

    id: str | None
    builtin: bool
    owner: str | None
    type: str
    name: str
    description: str
    default_config: JsonObject
    json_schema: JsonObject
    data_example: Any


class TemplateList(ApiModel):
    templates: list[Template]


# --- accounts ---------------------------------------------------------------------------------------------------------


class User(ApiModel):
    username: str
    role: str
    created_at: Timestamp


class CurrentUser(ApiModel):
    username: str
    role: str


class LoginReply(ApiModel):
    token: str
    expires_at: Timestamp
    user: User


class UserList(ApiModel):
    users: list[User]


class OkReply(ApiModel):
    ok: bool


# --- system -----------------------------------------------------------------------------------------------------------


class AgentDevice(ApiModel):
    """A GPU with NVML readings, or a CPU slot (kind "cpu": no readings)."""

    index: int
    kind: str
    uuid: str | None
    name: str | None
    memory_total_bytes: int
    memory_free_bytes: int
    utilization_percent: float


class AgentInfo(ApiModel):
    agent_id: str
    address: str
    hostname: str
    slots: int
    free_slots: int
    alive: bool
    last_heartbeat: Timestamp
    devices: list[AgentDevice]
    warm_pool_memory_bytes: int
    busy_devices: list[int] = Field(description="held by active tasks, whoever owns them")


class GatewayHealth(ApiModel):
    status: str


class ControlPlaneHealth(ApiModel):
    status: str
    database: str
    serving: bool
    queued_tasks: int
    running_tasks: int


class SystemHealth(ApiModel):
    status: str = Field(description='"ok"; "degraded": no live agent; "unavailable": the control plane cannot serve')
    serving: bool
    gateway: GatewayHealth
    control_plane: ControlPlaneHealth
    agents: list[AgentInfo]


# --- datasets, models, artifacts, chat --------------------------------------------------------------------------------


class Dataset(ApiModel):
    """An uploaded dataset; a task config names it as `dataset:<id>`."""

    id: str
    name: str
    type: str
    sha256: str
    size: int
    rows: int
    created_at: Timestamp
    owner: str | None


class DatasetDetail(Dataset):
    stats: JsonObject
    preview: list[Any] = Field(description="the first rows")


class DatasetList(ApiModel):
    datasets: list[Dataset]


class ModelEntry(ApiModel):
    name: str
    kind: str
    size: int
    agents: list[str] = Field(description="the live agents that hold it")


class ModelList(ApiModel):
    models: list[ModelEntry]


class Artifact(ApiModel):
    path: str = Field(description="relative to the task's output directory, /-separated")
    size: int
    kind: str = Field(description="adapter, model, checkpoint, summary, log, predictions")


class ArtifactList(ApiModel):
    artifacts: list[Artifact]
    source: str = Field(description='"agent", or "published" once the agent is gone')


class ChatToken(ApiModel):
    """`event: token` of a chat stream."""

    text: str


class RankedPassage(ApiModel):
    index: int
    score: float


class ChatDone(ApiModel):
    """`event: done` of a chat stream: the whole answer."""

    text: str
    model: str
    ranking: list[RankedPassage] = Field(None, json_schema_extra=_no_default,  # type: ignore[assignment]
                                         description="an embedding task's passages by similarity, best first; absent "
                                         "for other types")


class ChatClosed(ApiModel):
    task_id: str
    closed: bool


# --- request bodies (documented here, parsed by gateway/inputs.py) ------------------------------------------------------



class StartTaskBody(RequestModel):
    type: str = Field(min_length=1, pattern=r"\S",
                      description="task type: sft, dpo, embedding or kbalign (see /api/finetune/templates)")
    config: JsonObject = Field(description="the type's config; omitted keys take the template's defaults")


class UpdatePriorityBody(RequestModel):
    priority: int = Field(ge=-(2**31), le=2**31 - 1, description="in the config's priority range; higher runs first")


class ResumeBody(RequestModel):
    checkpoint: str = Field(None, min_length=1, pattern=r"\S", json_schema_extra=_no_default,  # type: ignore[assignment]
                            description="one of the task's checkpoints (its path); default: the latest")


class SaveTemplateBody(RequestModel):
    name: str = Field(min_length=1, pattern=r"\S")
    type: str = Field(min_length=1, pattern=r"\S")
    config: JsonObject


class ExportBody(RequestModel):
    merge_lora: bool = Field(True, description="merge a LoRA adapter into its base model")
    dtype: str = Field("auto", min_length=1, pattern=r"\S", description="auto, float32, float16 or bfloat16")


class LoginBody(RequestModel):
    username: str = Field(min_length=1, pattern=r"\S")
    password: str = Field(min_length=1, pattern=r"\S")


class CreateUserBody(RequestModel):
    username: str = Field(min_length=1, pattern=r"\S")
    password: str = Field(min_length=1, pattern=r"\S")
    role: str = Field("user", min_length=1, pattern=r"\S", description="user or admin")
