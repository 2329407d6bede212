import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_QUEUED: _ClassVar[TaskStatus]
    TASK_STATUS_STARTING: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_STOPPING: _ClassVar[TaskStatus]
    TASK_STATUS_SUCCEEDED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_STOPPED: _ClassVar[TaskStatus]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_QUEUED: TaskStatus
TASK_STATUS_STARTING: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_STOPPING: TaskStatus
TASK_STATUS_SUCCEEDED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
TASK_STATUS_STOPPED: TaskStatus

class LogLine(_message.Message):
    __slots__ = ("seq", "time", "stream", "text")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    stream: str
    text: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stream: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class MetricPoint(_message.Message):
    __slots__ = ("seq", "time", "values_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    VALUES_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    values_json: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., values_json: _Optional[str] = ...) -> None: ...

class TaskStatusUpdate(_message.Message):
    __slots__ = ("status", "time", "exit_code", "reason", "error", "pid", "attempt")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    status: TaskStatus
    time: _timestamp_pb2.Timestamp
    exit_code: int
    reason: str
    error: str
    pid: int
    attempt: int
    def __init__(self, status: _Optional[_Union[TaskStatus, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ..., error: _Optional[str] = ..., pid: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class ValidateTaskRequest(_message.Message):
    __slots__ = ("type", "config_json", "owner", "admin_paths", "shallow", "inputs")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ADMIN_PATHS_FIELD_NUMBER: _ClassVar[int]
    SHALLOW_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    type: str
    config_json: str
    owner: str
    admin_paths: bool
    shallow: bool
    inputs: _containers.RepeatedCompositeFieldContainer[BlobRef]
    def __init__(self, type: _Optional[str] = ..., config_json: _Optional[str] = ..., owner: _Optional[str] = ..., admin_paths: _Optional[bool] = ..., shallow: _Optional[bool] = ..., inputs: _Optional[_Iterable[_Union[BlobRef, _Mapping]]] = ...) -> None: ...

class DataProblem(_message.Message):
    __slots__ = ("line", "field", "message")
    LINE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    line: int
    field: str
    message: str
    def __init__(self, line: _Optional[int] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ValidationReport(_message.Message):
    __slots__ = ("ok", "type", "rows", "problems", "stats_json", "error_field", "error_message", "warnings", "agent_id")
    OK_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    STATS_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    type: str
    rows: int
    problems: _containers.RepeatedCompositeFieldContainer[DataProblem]
    stats_json: str
    error_field: str
    error_message: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    agent_id: str
    def __init__(self, ok: _Optional[bool] = ..., type: _Optional[str] = ..., rows: _Optional[int] = ..., problems: _Optional[_Iterable[_Union[DataProblem, _Mapping]]] = ..., stats_json: _Optional[str] = ..., error_field: _Optional[str] = ..., error_message: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., agent_id: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("index", "kind", "uuid", "name", "memory_total_bytes", "memory_free_bytes", "utilization_percent")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    index: int
    kind: str
    uuid: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    utilization_percent: float
    def __init__(self, index: _Optional[int] = ..., kind: _Optional[str] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., utilization_percent: _Optional[float] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("data", "offset", "total_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total_size: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ...) -> None: ...

class BlobRef(_message.Message):
    __slots__ = ("ref", "sha256", "size", "suffix", "archive")
    REF_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    ref: str
    sha256: str
    size: int
    suffix: str
    archive: bool
    def __init__(self, ref: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., suffix: _Optional[str] = ..., archive: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "size_bytes", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    size_bytes: int
    path: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., size_bytes: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("path", "size", "kind")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    kind: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., kind: _Optional[str] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("token", "done")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    token: str
    done: ChatDone
    def __init__(self, token: _Optional[str] = ..., done: _Optional[_Union[ChatDone, _Mapping]] = ...) -> None: ...

class ChatDone(_message.Message):
    __slots__ = ("text", "ranking", "model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    ranking: _containers.RepeatedCompositeFieldContainer[PassageScore]
    model: str
    def __init__(self, text: _Optional[str] = ..., ranking: _Optional[_Iterable[_Union[PassageScore, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class PassageScore(_message.Message):
    __slots__ = ("index", "score")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...
