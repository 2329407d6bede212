"""The store's tables (SQLModel). Times are timezone-aware UTC datetimes (SQLModel insists)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Optional

from sqlalchemy import BigInteger, Column, Double, Index, Text
from sqlmodel import Field, SQLModel

from control_plane.json_column import JsonText


def utcnow() -> datetime:
    return datetime.now(UTC)


class Task(SQLModel, table=True):
    # Composite indexes behind the hot reads: the list's keyset pages (newest first, alone or filtered by status, type
    # or owner) and a queued task's position (a count of the queued tasks ahead of it, in queue order).
    __table_args__ = (
        Index("ix_task_list", "created_at", "id"),
        Index("ix_task_status_list", "status", "created_at", "id"),
        Index("ix_task_type_list", "type", "created_at", "id"),
        Index("ix_task_owner_list", "owner", "created_at", "id"),
        Index("ix_task_queue_order", "status", "priority", "created_at", "id"),
    )

    id: str = Field(primary_key=True)
    type: str = Field(index=True)
    status: str = Field(index=True)
    owner: str = Field(default="", index=True)  # the username that submitted it
    config_json: str = Field(sa_column=Column(JsonText, nullable=False))
    output_dir: str = ""
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    agent_id: str = Field(default="", index=True)
    pid: int = 0
    exit_code: int = 0
    error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    error_reason: str = ""
    # Progress, kept current by ingestion from the trainer's metric events.
    step: int = 0
    total_steps: int = 0
    percent: float = 0.0
    eta_seconds: Optional[float] = None
    epoch: Optional[float] = None
    loss: Optional[float] = None
    learning_rate: Optional[float] = None
    latest_metrics_json: str = Field(default="{}", sa_column=Column(JsonText, nullable=False, default="{}"))
    # Scheduling: what the task asked for, and where it was placed.
    priority: int = Field(default=0, index=True)
    gpus: int = 1  # devices wanted (ignored when gpu_vis pins them); a gang's total
    nodes: int = 1  # hosts (agents) it runs on together: more than one is a gang, placed all at once
    gpus_per_node: int = 0  # a gang's devices on each node (0: not a gang, or split_gpus decides)
    split_gpus: bool = False  # `gpus` may be split over several agents in equal shares
    gpu_vis: str = ""  # pinned device indices, "0,1"
    devices: str = ""  # the devices placed on, "0,1"
    attempt: int = 0  # 1 once first placed; each retry or resume adds one
    max_retries: int = 0  # requeues allowed when its agent is lost
    retries: int = 0  # requeues used
    resume_from: str = ""  # the checkpoint the next attempt starts from
    # The newest seqs persisted: ingestion resumes after them.
    last_log_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    last_metric_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class TaskEvent(SQLModel, table=True):
    __tablename__ = "task_event"

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: str = Field(index=True)
    time: datetime = Field(default_factory=utcnow)
    from_status: str = ""
    to_status: str
    reason: str
    message: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class LogLine(SQLModel, table=True):
    __tablename__ = "log_line"

    task_id: str = Field(primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    time: datetime
    stream: str
    text: str = Field(sa_column=Column(Text, nullable=False))


class MetricPoint(SQLModel, table=True):
    __tablename__ = "metric_point"

    task_id: str = Field(primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    time: datetime
    values_json: str = Field(sa_column=Column(JsonText, nullable=False))


class TaskAttempt(SQLModel, table=True):
    __tablename__ = "task_attempt"

    task_id: str = Field(primary_key=True)
    number: int = Field(primary_key=True)
    agent_id: str = ""
    devices: str = ""
    resumed_from: str = ""
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: Optional[datetime] = None
    status: str = ""  # how it ended ("" while it runs)
    reason: str = ""


class TaskNode(SQLModel, table=True):
    """One node of a multi-node attempt: where it runs and how far ingestion has read its stream. A gang's lines get
    the task's seqs in the order they are stored; each node's own seqs (assigned by its agent) are the resume cursor."""

    __tablename__ = "task_node"

    task_id: str = Field(primary_key=True)
    attempt: int = Field(primary_key=True)
    node: int = Field(primary_key=True)  # 0-based; the rendezvous runs on node 0's host
    agent_id: str = ""
    devices: str = ""  # "0,1"
    pid: int = 0
    output_dir: str = ""
    status: str = ""  # "" while it runs, then its own final status
    exit_code: int = 0
    error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    rank0: bool = False  # it runs global rank 0: it reports the metrics and writes the model
    last_log_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    last_metric_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class Checkpoint(SQLModel, table=True):
    task_id: str = Field(primary_key=True)
    path: str = Field(primary_key=True)
    step: int = 0
    attempt: int = 0
    time: datetime = Field(default_factory=utcnow)


class TaskValidation(SQLModel, table=True):
    """The data check of a submitted task. While `state` is pending the task waits in the queue without being placed;
    a failed check fails the task. Tasks from before this table have no row and count as checked."""

    __tablename__ = "task_validation"

    task_id: str = Field(primary_key=True)
    state: str = Field(default="pending", index=True)  # pending | passed | failed
    rows: int = 0
    message: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # Whose path scope the check runs in (kept so a restarted control plane checks a pending task the same way).
    admin_paths: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class Agent(SQLModel, table=True):
    id: str = Field(primary_key=True)
    address: str
    hostname: str = ""
    slots: int = 1
    # The inventory the agent reported (a JSON list of devices: index, kind, name, memory, utilization).
    devices_json: str = Field(default="[]", sa_column=Column(JsonText, nullable=False, default="[]"))
    registered_at: datetime = Field(default_factory=utcnow)
    last_heartbeat: datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    __tablename__ = "app_user"  # "user" is reserved in PostgreSQL

    username: str = Field(primary_key=True)
    password_hash: str
    role: str = "user"  # "admin" or "user"
    created_at: datetime = Field(default_factory=utcnow)


class AuthToken(SQLModel, table=True):
    __tablename__ = "auth_token"

    # Only the SHA-256 of a bearer token is stored: a leaked database does not leak sessions.
    token_hash: str = Field(primary_key=True)
    username: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class ApiKey(SQLModel, table=True):
    """A long-lived, revocable credential of a user's (control_plane/api_keys.py), limited by its scopes. Like a
    session token only its SHA-256 is stored; `prefix` (the key's first characters) tells keys apart in a list."""

    __tablename__ = "api_key"

    id: str = Field(primary_key=True)
    key_hash: str = Field(unique=True, index=True)
    owner: str = Field(index=True)
    name: str
    scopes: str  # comma-separated: read, submit, admin
    prefix: str
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: Optional[datetime] = None  # written at most once a minute per key


class SavedTemplate(SQLModel, table=True):
    __tablename__ = "saved_template"

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    name: str
    type: str
    config_json: str = Field(sa_column=Column(JsonText, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class LoginThrottle(SQLModel, table=True):
    """Failed-login counters (control_plane/login_throttle.py): one row per key — scope "user_address" (username and
    client address), "address" (username "") or "user" (address ""). Times are seconds since the epoch."""

    __tablename__ = "login_throttle"

    scope: str = Field(primary_key=True)
    username: str = Field(default="", primary_key=True)
    address: str = Field(default="", primary_key=True)
    failures: int = 0  # counted within the current quiet window
    last_at: float = Field(default=0.0, sa_column=Column(Double, nullable=False, default=0.0, index=True))
    next_allowed_at: float = Field(default=0.0, sa_column=Column(Double, nullable=False, default=0.0))  # 0: no back-off
    version: int = 0  # bumped on every write, for compare-and-set


class Dataset(SQLModel, table=True):
    """An uploaded dataset: its rows were checked by its type's row validator on the way in. The bytes are a blob
    (control_plane.blob_store) under `sha256`, shared by every dataset record with the same bytes."""

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    name: str
    type: str = Field(index=True)
    sha256: str = Field(index=True)
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    rows: int = 0
    suffix: str = ".jsonl"  # how the trainer reads it: JSONL, or a JSON list
    stats_json: str = Field(default="{}", sa_column=Column(JsonText, nullable=False, default="{}"))
    preview_json: str = Field(default="[]", sa_column=Column(JsonText, nullable=False, default="[]"))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class OutputDirClaim(SQLModel, table=True):
    """An `output_dir` a task named: no other task may name it again (the primary key makes the claim atomic)."""

    __tablename__ = "output_dir_claim"

    output_dir: str = Field(primary_key=True)
    task_id: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class AgentInventory(SQLModel, table=True):
    """What an agent last reported besides its devices: the models it holds, and whether it can reach a model hub."""

    __tablename__ = "agent_inventory"

    agent_id: str = Field(primary_key=True)
    models_json: str = Field(default="[]", sa_column=Column(JsonText, nullable=False, default="[]"))
    hub_access: bool = False
    updated_at: datetime = Field(default_factory=utcnow)


class PublishedModel(SQLModel, table=True):
    """The final model of a succeeded task, as a tar in the blob store: downloadable after its agent is gone."""

    __tablename__ = "published_model"

    task_id: str = Field(primary_key=True)
    sha256: str = Field(index=True)
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    created_at: datetime = Field(default_factory=utcnow)


class WebhookEndpoint(SQLModel, table=True):
    """A user's webhook receiver (control_plane/webhook_store.py): told when that user's tasks start and end. The
    secret signs every request (Standard Webhooks HMAC), so it is kept as given, not hashed; it is shown once."""

    __tablename__ = "webhook_endpoint"

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: str  # comma-separated event types: task.started, task.succeeded, task.failed, task.stopped
    description: str = ""
    secret: str
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one event for one endpoint, written in the task transition's own transaction. Its id is the
    `webhook-id` header, the same on every try (receivers dedupe by it)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "state", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint_list", "endpoint_id", "created_at"),
    )

    id: str = Field(primary_key=True)
    endpoint_id: str
    task_event_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    task_id: str
    event_type: str
    payload_json: str = Field(sa_column=Column(JsonText, nullable=False))
    state: str = "pending"  # pending | delivered | failed (out of tries)
    attempts: int = 0
    next_attempt_at: Optional[datetime] = None  # when pending: the next try (moved on while a try is in flight)
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class WebhookAttempt(SQLModel, table=True):
    """One try of a delivery, for the user's delivery log."""

    __tablename__ = "webhook_attempt"

    delivery_id: str = Field(primary_key=True)
    number: int = Field(primary_key=True)
    time: datetime = Field(default_factory=utcnow)
    status_code: int = 0  # 0: no answer (see error)
    error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    duration_ms: int = 0
    next_attempt_at: Optional[datetime] = None  # None: no further try
