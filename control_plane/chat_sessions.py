"""Chat sessions' bookkeeping on the control plane: which agent and device each open session holds (one per task),
opening one on a free device, and closing it on request or after `BUGAGARIC_CHAT_IDLE_SECONDS` unused.

A session's device counts as held for the scheduler (`held()` is merged into every round's held devices) from the
moment it is chosen, before the agent is even asked, so no task is placed there meanwhile; a closed session wakes the
scheduler. The agent holds the device too (its launches refuse it) and closes a session left idle on its own, should
this control plane go away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import grpc

from control_plane.agent_clients import AgentClients
from control_plane.db_calls import in_db_thread
from control_plane.model_catalog import ModelCatalog, config_holders
from control_plane.models import Task
from control_plane.placement import choose
from control_plane.published_models import PublishedModels
from control_plane.scheduler import Scheduler
from control_plane.state_machine import TaskStatus
from control_plane.task_store import TaskNotFound, TaskStore
from protos import agent_pb2, common_pb2
from trainers.common.chat_model import CHAT_TYPES
from trainers.export.spec import EXPORT_TYPE

log = logging.getLogger(__name__)

OPEN_TIMEOUT_SECONDS = 660.0  # the agent's own limit on a load is 600 s
CLOSE_TIMEOUT_SECONDS = 15.0
# The agent closes an idle session on its own this much later than the control plane would (should it be gone).
AGENT_BACKSTOP_SECONDS = 30.0


class NoFreeDevice(Exception):
    pass


class OpenFailed(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class ChatSubject:
    """What a chat session loads: the published model of task `task_id`, trained as a `type` task with `config_json`
    (its prompt template, max_length and base model). An export's are its source task's, with the export's model."""

    task_id: str
    type: str
    config_json: str


def chat_subject(store: TaskStore, task: Task) -> ChatSubject:
    """On a store thread: what chatting with `task` loads; OpenFailed (FAILED_PRECONDITION) when it has no model to
    chat with. An export answers with its exported model, prompted as its source task trained (the source's type and
    config; the export's base model when it names one)."""
    if task.status != TaskStatus.SUCCEEDED:
        raise OpenFailed(grpc.StatusCode.FAILED_PRECONDITION,
                         f"task {task.id} is {task.status}; only a succeeded task's model can be chatted with")
    kind, config = task.type, json.loads(task.config_json)
    if task.type == EXPORT_TYPE:
        source_id = str(config.get("source", "")).removeprefix("task:")
        try:
            source = store.get_task(source_id)
        except TaskNotFound:
            raise OpenFailed(grpc.StatusCode.FAILED_PRECONDITION,
                             f"export {task.id}: its source task {source_id} was deleted, so the prompt it trained "
                             "with is unknown; chat with a task that is still listed") from None
        base = config.get("model_name_or_path")
        kind, config = source.type, json.loads(source.config_json)
        if base:
            config["model_name_or_path"] = base
    if kind not in CHAT_TYPES:
        raise OpenFailed(grpc.StatusCode.FAILED_PRECONDITION,
                         f"task type {kind} has no model to chat with (only {', '.join(sorted(CHAT_TYPES))} and their "
                         "exports)")
    return ChatSubject(task.id, kind, json.dumps(config))


@dataclass
class ChatSession:
    task_id: str
    session_id: str
    agent_id: str
    address: str
    device: int
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0  # answers in flight: never closed for idleness meanwhile
    opened_in: float = 0.0  # seconds the agent took to fetch and load the model


class ChatSessions:
    def __init__(self, store: TaskStore, scheduler: Scheduler, clients: AgentClients, catalog: ModelCatalog,
                 published: PublishedModels, *, idle_seconds: float):
        self._store = store
        self._scheduler = scheduler
        self._clients = clients
        self._catalog = catalog
        self._published = published
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, ChatSession] = {}  # task id -> its session (opening or open)
        self._opening: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task | None = None

    def held(self) -> dict[str, set[int]]:
        """agent id -> devices chat sessions hold (read from store threads too: a snapshot of the values)."""
        held: dict[str, set[int]] = {}
        for session in list(self._sessions.values()):
            held.setdefault(session.agent_id, set()).add(session.device)
        return held

    def get(self, task_id: str) -> ChatSession | None:
        return self._sessions.get(task_id)

    async def session_for(self, subject: ChatSubject) -> ChatSession:
        """The task's open session, or a new one on a free device (NoFreeDevice, OpenFailed)."""
        lock = self._opening.setdefault(subject.task_id, asyncio.Lock())
        async with lock:  # two first calls at once open one session
            session = self._sessions.get(subject.task_id)
            if session is not None:
                return session
            return await self._open(subject)

    async def _open(self, subject: ChatSubject) -> ChatSession:
        placement, model = await in_db_thread(self._place, subject)
        session = ChatSession(subject.task_id, uuid.uuid4().hex, placement.agent.id, placement.agent.address,
                              placement.devices[0])
        self._sessions[subject.task_id] = session  # held from now on
        self._start_reaper()
        request = agent_pb2.AgentOpenChatRequest(
            session_id=session.session_id, task_id=subject.task_id, type=subject.type,
            config_json=subject.config_json, device=session.device, model=model,
            idle_seconds=self.idle_seconds + AGENT_BACKSTOP_SECONDS)
        try:
            reply = await self._clients.stub(session.address).OpenChat(request, timeout=OPEN_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            self.drop(session)
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise NoFreeDevice(f"no free device for a chat session: {exc.details()}") from None
            raise OpenFailed(exc.code(), f"the chat session could not be opened on agent {session.agent_id}: "
                                         f"{exc.details()}") from None
        except BaseException:
            self.drop(session)
            raise
        session.opened_in = reply.load_seconds
        session.last_used = time.monotonic()
        session.ready.set()
        log.info("chat session %s for task %s open on agent %s device %d (%.1fs)", session.session_id, subject.task_id,
                 session.agent_id, session.device, reply.load_seconds)
        return session

    def _place(self, subject: ChatSubject):
        """On a store thread: a free device on a live agent holding the task's base model, and the model to fetch."""
        task_id = subject.task_id
        published = self._published.get(task_id)
        if published is None:
            raise OpenFailed(grpc.StatusCode.FAILED_PRECONDITION,
                             f"the model of task {task_id} is not published yet; try again shortly")
        live = self._scheduler.live_agents()
        held = self._scheduler.held_devices()
        base = json.loads(subject.config_json).get("model_name_or_path")
        allowed = config_holders({"model_name_or_path": base} if isinstance(base, str) else {},
                                 self._catalog.inventories({agent.id for agent in live}))
        candidates = [agent for agent in live if allowed is None or agent.id in allowed]
        placement = choose(Task(gpus=1, gpu_vis=""), candidates, held)
        if placement is None:
            where = "no live agent holds its base model" if live and not candidates else (
                "every device is busy with tasks or other chat sessions" if live else "no agent is online")
            raise NoFreeDevice(f"no free device for a chat session with task {task_id}: {where}; try again later "
                               "or close another chat")
        model = common_pb2.BlobRef(ref=f"task:{task_id}", sha256=published.sha256, size=published.size_bytes,
                                   archive=True)
        return placement, model

    def begin(self, session: ChatSession) -> None:
        session.busy += 1

    def end(self, session: ChatSession) -> None:
        session.busy -= 1
        session.last_used = time.monotonic()

    def drop(self, session: ChatSession) -> None:
        """Forgets the session (its open failed, or its agent no longer has it) and frees its device here."""
        if self._sessions.get(session.task_id) is session:
            del self._sessions[session.task_id]
            self._scheduler.wake()  # its device is free for the queue

    async def close(self, task_id: str) -> bool:
        """Closes the task's session on its agent and frees the device; False when none was open."""
        session = self._sessions.get(task_id)
        if session is None:
            return False
        self.drop(session)
        try:
            await self._clients.stub(session.address).CloseChat(
                agent_pb2.AgentCloseChatRequest(session_id=session.session_id), timeout=CLOSE_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:  # the agent closes an idle session on its own
            log.warning("chat session %s: close on agent %s: %s %s", session.session_id, session.agent_id,
                        exc.code().name, exc.details())
        log.info("chat session %s for task %s closed; device %d of agent %s is free", session.session_id, task_id,
                 session.device, session.agent_id)
        return True

    async def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for task_id in list(self._sessions):
            await self.close(task_id)

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="chat-idle-reaper")

    async def _reap(self) -> None:
        tick = min(1.0, max(0.1, self.idle_seconds / 4))
        while self._sessions:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.ready.is_set() and not session.busy and now - session.last_used > self.idle_seconds:
                    log.info("chat session %s for task %s idle for %.0fs", session.session_id, session.task_id,
                             now - session.last_used)
                    try:
                        await self.close(session.task_id)
                    except Exception:  # keep reaping the others
                        log.exception("closing idle chat session %s failed", session.session_id)
