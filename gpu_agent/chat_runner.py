"""Chat sessions on this agent: one child process per session (`python -m trainers.common.chat_model`, which imports
torch; the agent does not) holding a finished task's model on one device, spoken to over a Unix socket. The child is
forked from the warm trainer pool when it is ready (torch and transformers already imported: the open costs the
model load alone), else started cold. The device counts as held (Agent.held_devices) from the open until the close,
so no task is launched onto it meanwhile; a session unused for its idle time is closed here too, so a device is
never kept by a control plane that went away."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

from gpu_agent import devices as device_claims
from gpu_agent import process_runner
from gpu_agent.blob_cache import Held, InputSpec
from trainers.common.chat_model import CHAT_TYPES, LM_TYPES

if TYPE_CHECKING:
    from gpu_agent.agent import Agent

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENTRY_MODULE = "trainers.common.chat_model"
OPEN_TIMEOUT_SECONDS = 600.0  # fetch + imports + load of a big model
CLOSE_GRACE_SECONDS = 5.0
# A generous line limit: one streamed token, or a ranking of 20 passages.
_LINE_LIMIT = 1 << 20


class ChatError(Exception):
    pass


class SessionNotFound(ChatError):
    pass


class DeviceBusy(ChatError):
    pass


class BadChatRequest(ChatError):
    pass


@dataclass
class ChatSession:
    session_id: str
    task_id: str
    device: int
    idle_seconds: float
    log_file: Path
    exit_file: Path  # written by the child's supervisor when it ends (a child forked from the warm pool)
    pid: int = 0  # its process group
    popen: asyncio.subprocess.Process | None = None  # a child started cold (ours to wait for)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    held: list[Held] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0  # turns in flight: never closed for idleness meanwhile
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.returncode is None
        if not self.pid or self.exit_file.exists():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


class ChatRunner:
    def __init__(self, agent: "Agent"):
        self._agent = agent
        self.sessions: dict[str, ChatSession] = {}
        self._request_ids = itertools.count(1)
        self._reaper: asyncio.Task | None = None

    def held_devices(self) -> set[int]:
        return {session.device for session in self.sessions.values()}

    async def open(self, session_id: str, task_id: str, type_name: str, config_json: str, device: int,
                   model: InputSpec, idle_seconds: float) -> float:
        """Starts the session's process and waits for its model to load; returns the seconds that took."""
        if not _SESSION_ID.match(session_id):
            raise BadChatRequest(f"session_id {session_id!r} must be 1-128 of [A-Za-z0-9._-]")
        if session_id in self.sessions:
            raise BadChatRequest(f"chat session {session_id} is already open on this agent")
        if type_name not in CHAT_TYPES:
            raise BadChatRequest(f"a {type_name} task has no model to chat with (only {', '.join(sorted(CHAT_TYPES))})")
        try:
            config = json.loads(config_json)
            base = config["model_name_or_path"]
        except (ValueError, KeyError, TypeError):
            raise BadChatRequest("config_json must be the task's config, with model_name_or_path") from None
        try:
            device_claims.claim([device], self._agent.inventory.indices, self._agent.held_devices())
        except device_claims.BadDevices as exc:
            raise BadChatRequest(str(exc)) from None
        except device_claims.DevicesUnavailable as exc:
            raise DeviceBusy(str(exc)) from None
        chat_dir = self._agent.agent_dir / "chat"
        chat_dir.mkdir(parents=True, exist_ok=True)
        # Held from here on (before any await): a launch arriving meanwhile is refused this device.
        session = ChatSession(session_id, task_id, device, max(1.0, idle_seconds or 300.0),
                              log_file=chat_dir / f"{session_id}.log", exit_file=chat_dir / f"{session_id}.exit.json")
        self.sessions[session_id] = session
        self._start_reaper()
        started = time.monotonic()
        # A short directory of its own: a socket path may hold ~100 bytes, the agent's directory can be deep.
        socket_dir = Path(tempfile.mkdtemp(prefix="bugagaric-chat-"))
        try:
            session.held = await asyncio.to_thread(self._agent.fetch_inputs, [model])
            placed_json, model_env = self._agent.place_model(json.dumps({"model_name_or_path": base}), {})
            connected: asyncio.Future = asyncio.get_running_loop().create_future()

            def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                if connected.done():
                    writer.close()  # only the session's own process talks here
                else:
                    connected.set_result((reader, writer))

            server = await asyncio.start_unix_server(on_connect, path=str(socket_dir / "s"), limit=_LINE_LIMIT)
            args = ["--socket", str(socket_dir / "s"), "--kind", "lm" if type_name in LM_TYPES else "embedding",
                    "--base", json.loads(placed_json)["model_name_or_path"], "--tuned", str(session.held[0].path),
                    "--max-length", str(int(config.get("max_length") or config.get("max_seq_length") or 1024)),
                    "--query-instruction", str(config.get("query_instruction") or ""),
                    "--workspace", str(self._agent.workspace)]
            env = process_runner.environment_without_secrets(
                {**model_env, **device_claims.visible_devices_env([device], self._agent.inventory.kind)})
            try:
                await self._start(session, args, env)
                while not connected.done():
                    await asyncio.wait({connected}, timeout=0.5)
                    if not connected.done() and not session.alive():
                        raise ChatError(f"the chat process exited before it started; see {session.log_file}")
                    if time.monotonic() - started > OPEN_TIMEOUT_SECONDS:
                        raise ChatError("the chat process did not start in time")
                session.reader, session.writer = connected.result()
            finally:
                server.close()
            first = await asyncio.wait_for(self._read(session), OPEN_TIMEOUT_SECONDS)
            if "error" in first or not first.get("ready"):
                raise ChatError(first.get("error") or f"the chat process said {first!r} instead of ready")
        except BaseException:
            await self.close(session_id)
            raise
        finally:
            shutil.rmtree(socket_dir, ignore_errors=True)
        session.last_used = time.monotonic()
        seconds = time.monotonic() - started
        log.info("chat session %s (task %s) open on device %d after %.1fs", session_id, task_id, device, seconds)
        return seconds

    async def _start(self, session: ChatSession, args: list[str], env: dict[str, str]) -> None:
        """Forked from the warm pool when it takes the job, else a new interpreter; in a session of its own."""
        pool = self._agent.warm_pool
        if pool is not None:
            forked = await asyncio.to_thread(
                pool.launch, entry_module=ENTRY_MODULE, args=args, cwd=self._agent.workspace, env=env,
                stdout=session.log_file, stderr=session.log_file, exit_file=session.exit_file)
            if forked is not None:
                session.pid = forked[0]
                log.info("chat session %s: forked pid %d from the warm pool", session.session_id, session.pid)
                return
        with open(session.log_file, "ab") as output:
            session.popen = await asyncio.create_subprocess_exec(
                sys.executable, "-m", ENTRY_MODULE, *args, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                stderr=output, cwd=str(self._agent.workspace), env=env, start_new_session=True)
        session.pid = session.popen.pid

    async def turn(self, session_id: str, request: dict) -> AsyncIterator[dict]:
        """One answer: {"token": ...} dicts, then {"done": ..., ["ranking"]}. Turns of a session run one at a time."""
        session = self.sessions.get(session_id)
        if session is None or session.writer is None:
            raise SessionNotFound(f"chat session {session_id} is not open on this agent")
        session.busy += 1
        try:
            async with session.lock:
                request_id = next(self._request_ids)
                try:
                    session.writer.write((json.dumps({**request, "id": request_id}) + "\n").encode())
                    await session.writer.drain()
                except (BrokenPipeError, ConnectionResetError):
                    await self.close(session_id)
                    raise SessionNotFound(f"chat session {session_id} has ended (its process exited)") from None
                while True:
                    message = await self._read(session)
                    if message.get("id") != request_id:
                        continue  # the rest of an answer whose reader went away
                    if "error" in message:
                        raise ChatError(message["error"])
                    message.pop("id", None)
                    yield message
                    if "done" in message:
                        return
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()

    async def _read(self, session: ChatSession) -> dict:
        line = await session.reader.readline()
        if not line:
            await self.close(session.session_id)
            raise SessionNotFound(f"chat session {session.session_id} has ended (its process exited; see "
                                  f"{session.log_file})")
        return json.loads(line)

    async def close(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        if session.writer is not None:
            session.writer.close()  # the child's loop ends at the socket's end
        await _stop(session)
        for item in session.held:
            item.close()
        log.info("chat session %s (task %s) closed; device %d is free", session_id, session.task_id, session.device)
        return True

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.close(session_id)
        if self._reaper is not None:
            self._reaper.cancel()

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="chat-idle-reaper")

    async def _reap(self) -> None:
        while self.sessions:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.writer is not None and not session.busy and now - session.last_used > session.idle_seconds:
                    log.info("chat session %s idle for %.0fs", session.session_id, now - session.last_used)
                    await self.close(session.session_id)


async def _stop(session: ChatSession) -> None:
    """SIGTERM to the session's process group, SIGKILL after the grace period; returns once it has ended."""
    if not session.pid or not session.alive():
        return
    for sig, wait in ((signal.SIGTERM, CLOSE_GRACE_SECONDS), (signal.SIGKILL, CLOSE_GRACE_SECONDS)):
        try:
            os.killpg(session.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while session.alive() and time.monotonic() < deadline:
            if session.popen is not None:
                try:
                    await asyncio.wait_for(session.popen.wait(), 0.1)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0.1)
        if not session.alive():
            return
