from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LaunchTaskRequest(_message.Message):
    __slots__ = ("task_id", "type", "config_json", "env", "devices", "attempt", "log_seq_base", "metric_seq_base", "resume_from_checkpoint", "inputs", "gang")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LOG_SEQ_BASE_FIELD_NUMBER: _ClassVar[int]
    METRIC_SEQ_BASE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    GANG_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    type: str
    config_json: str
    env: _containers.ScalarMap[str, str]
    devices: _containers.RepeatedScalarFieldContainer[int]
    attempt: int
    log_seq_base: int
    metric_seq_base: int
    resume_from_checkpoint: str
    inputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.BlobRef]
    gang: GangLaunch
    def __init__(self, task_id: _Optional[str] = ..., type: _Optional[str] = ..., config_json: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., devices: _Optional[_Iterable[int]] = ..., attempt: _Optional[int] = ..., log_seq_base: _Optional[int] = ..., metric_seq_base: _Optional[int] = ..., resume_from_checkpoint: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_common_pb2.BlobRef, _Mapping]]] = ..., gang: _Optional[_Union[GangLaunch, _Mapping]] = ...) -> None: ...

class GangLaunch(_message.Message):
    __slots__ = ("nnodes", "node_rank", "rdzv_id", "rdzv_host", "rdzv_port", "resume_subpath")
    NNODES_FIELD_NUMBER: _ClassVar[int]
    NODE_RANK_FIELD_NUMBER: _ClassVar[int]
    RDZV_ID_FIELD_NUMBER: _ClassVar[int]
    RDZV_HOST_FIELD_NUMBER: _ClassVar[int]
    RDZV_PORT_FIELD_NUMBER: _ClassVar[int]
    RESUME_SUBPATH_FIELD_NUMBER: _ClassVar[int]
    nnodes: int
    node_rank: int
    rdzv_id: str
    rdzv_host: str
    rdzv_port: int
    resume_subpath: str
    def __init__(self, nnodes: _Optional[int] = ..., node_rank: _Optional[int] = ..., rdzv_id: _Optional[str] = ..., rdzv_host: _Optional[str] = ..., rdzv_port: _Optional[int] = ..., resume_subpath: _Optional[str] = ...) -> None: ...

class LaunchTaskResponse(_message.Message):
    __slots__ = ("pid", "task_dir", "output_dir", "rdzv_port")
    PID_FIELD_NUMBER: _ClassVar[int]
    TASK_DIR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    RDZV_PORT_FIELD_NUMBER: _ClassVar[int]
    pid: int
    task_dir: str
    output_dir: str
    rdzv_port: int
    def __init__(self, pid: _Optional[int] = ..., task_dir: _Optional[str] = ..., output_dir: _Optional[str] = ..., rdzv_port: _Optional[int] = ...) -> None: ...

class AgentStopTaskRequest(_message.Message):
    __slots__ = ("task_id", "grace_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    grace_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., grace_seconds: _Optional[float] = ...) -> None: ...

class AgentStopTaskResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.TaskStatus
    def __init__(self, status: _Optional[_Union[_common_pb2.TaskStatus, str]] = ...) -> None: ...

class StreamTaskEventsRequest(_message.Message):
    __slots__ = ("task_id", "after_log_seq", "after_metric_seq", "follow", "attempt", "max_batch")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_LOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    AFTER_METRIC_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    after_log_seq: int
    after_metric_seq: int
    follow: bool
    attempt: int
    max_batch: int
    def __init__(self, task_id: _Optional[str] = ..., after_log_seq: _Optional[int] = ..., after_metric_seq: _Optional[int] = ..., follow: _Optional[bool] = ..., attempt: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...

class AgentTaskEvent(_message.Message):
    __slots__ = ("log", "metric", "status", "batch")
    LOG_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    log: _common_pb2.LogLine
    metric: _common_pb2.MetricPoint
    status: _common_pb2.TaskStatusUpdate
    batch: TaskOutputBatch
    def __init__(self, log: _Optional[_Union[_common_pb2.LogLine, _Mapping]] = ..., metric: _Optional[_Union[_common_pb2.MetricPoint, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.TaskStatusUpdate, _Mapping]] = ..., batch: _Optional[_Union[TaskOutputBatch, _Mapping]] = ...) -> None: ...

class TaskOutputBatch(_message.Message):
    __slots__ = ("lines", "metrics")
    LINES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[_common_pb2.LogLine]
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.MetricPoint]
    def __init__(self, lines: _Optional[_Iterable[_Union[_common_pb2.LogLine, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[_common_pb2.MetricPoint, _Mapping]]] = ...) -> None: ...

class DescribeAgentRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentTask(_message.Message):
    __slots__ = ("task_id", "status", "pid", "last_log_seq", "last_metric_seq", "attempt", "devices", "adopted")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_METRIC_SEQ_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: _common_pb2.TaskStatus
    pid: int
    last_log_seq: int
    last_metric_seq: int
    attempt: int
    devices: _containers.RepeatedScalarFieldContainer[int]
    adopted: bool
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.TaskStatus, str]] = ..., pid: _Optional[int] = ..., last_log_seq: _Optional[int] = ..., last_metric_seq: _Optional[int] = ..., attempt: _Optional[int] = ..., devices: _Optional[_Iterable[int]] = ..., adopted: _Optional[bool] = ...) -> None: ...

class AgentDescription(_message.Message):
    __slots__ = ("agent_id", "hostname", "slots", "free_slots", "tasks", "devices", "models", "warm_pool_memory_bytes")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    WARM_POOL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    hostname: str
    slots: int
    free_slots: int
    tasks: _containers.RepeatedCompositeFieldContainer[AgentTask]
    devices: _containers.RepeatedCompositeFieldContainer[_common_pb2.Device]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    warm_pool_memory_bytes: int
    def __init__(self, agent_id: _Optional[str] = ..., hostname: _Optional[str] = ..., slots: _Optional[int] = ..., free_slots: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[AgentTask, _Mapping]]] = ..., devices: _Optional[_Iterable[_Union[_common_pb2.Device, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ..., warm_pool_memory_bytes: _Optional[int] = ...) -> None: ...

class AgentArtifactsRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class AgentArtifactsResponse(_message.Message):
    __slots__ = ("artifacts", "output_dir")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Artifact]
    output_dir: str
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_common_pb2.Artifact, _Mapping]]] = ..., output_dir: _Optional[str] = ...) -> None: ...

class ReadArtifactRequest(_message.Message):
    __slots__ = ("task_id", "path", "offset")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    path: str
    offset: int
    def __init__(self, task_id: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class AgentOpenChatRequest(_message.Message):
    __slots__ = ("session_id", "task_id", "type", "config_json", "device", "model", "idle_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IDLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_id: str
    type: str
    config_json: str
    device: int
    model: _common_pb2.BlobRef
    idle_seconds: float
    def __init__(self, session_id: _Optional[str] = ..., task_id: _Optional[str] = ..., type: _Optional[str] = ..., config_json: _Optional[str] = ..., device: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.BlobRef, _Mapping]] = ..., idle_seconds: _Optional[float] = ...) -> None: ...

class AgentOpenChatResponse(_message.Message):
    __slots__ = ("session_id", "load_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    load_seconds: float
    def __init__(self, session_id: _Optional[str] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class AgentChatTurnRequest(_message.Message):
    __slots__ = ("session_id", "question", "passages", "model", "max_new_tokens")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    question: str
    passages: _containers.RepeatedScalarFieldContainer[str]
    model: str
    max_new_tokens: int
    def __init__(self, session_id: _Optional[str] = ..., question: _Optional[str] = ..., passages: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class AgentCloseChatRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class AgentCloseChatResponse(_message.Message):
    __slots__ = ("closed",)
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    closed: bool
    def __init__(self, closed: _Optional[bool] = ...) -> None: ...
