"""Starts the whole system — control plane, one GPU agent, gateway — as real subprocesses on free loopback ports."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    workspace: Path
    control_plane_port: int
    gateway_port: int
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    openai_port: int = 0  # the gateway's OpenAI-compatible API (gateway/openai_api), on a free port of its own
    # name ("agent", "agent-2", ...) -> its own environment (port, id, directory, slots)
    agent_envs: dict[str, dict[str, str]] = field(default_factory=dict)
    admin_user: str = "admin"
    _admin_token: str = ""
    control_plane_metrics_port: int = field(default_factory=free_port)  # Prometheus /metrics

    @property
    def admin_password(self) -> str:
        return self.env["BUGAGARIC_ADMIN_PASSWORD"]

    @property
    def cluster_token(self) -> str:
        return self.env["BUGAGARIC_CLUSTER_TOKEN"]

    def login(self, username: str, password: str) -> str:
        response = httpx.post(f"{self.base_url}/api/auth/login", json={"username": username, "password": password}, timeout=30)
        response.raise_for_status()
        return response.json()["token"]

    @property
    def admin_token(self) -> str:
        if not self._admin_token:
            self._admin_token = self.login(self.admin_user, self.admin_password)
        return self._admin_token

    def create_user(self, username: str, password: str) -> str:
        """Creates a plain user (as admin) and returns a token of theirs."""
        response = httpx.post(
            f"{self.base_url}/api/users", json={"username": username, "password": password},
            headers={"authorization": f"Bearer {self.admin_token}"}, timeout=30,
        )
        response.raise_for_status()
        return self.login(username, password)

    @property
    def control_plane_address(self) -> str:
        return f"127.0.0.1:{self.control_plane_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def openai_base_url(self) -> str:
        """What `OpenAI(base_url=...)` takes."""
        return f"http://127.0.0.1:{self.openai_port}/v1"

    def agent_metrics_url(self, name: str = "agent") -> str:
        return f"http://127.0.0.1:{self.agent_envs[name]['BUGAGARIC_AGENT_METRICS_PORT']}/metrics"

    @property
    def control_plane_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.control_plane_metrics_port}/metrics"

    def agent_dir(self, name: str = "agent") -> Path:
        return Path(self.agent_envs[name]["BUGAGARIC_AGENT_DIR"])

    def add_agent(self, name: str, slots: int, *, workspace: Path | None = None,
                  models_dir: Path | None = None) -> None:
        """Configures (and starts) one more agent, as on another host: its own port, id and directory; given a
        workspace (and a models directory) of its own, it shares no path with the control plane."""
        self.agent_envs[name] = {
            "BUGAGARIC_AGENT_PORT": str(free_port()),
            "BUGAGARIC_AGENT_METRICS_PORT": str(free_port()),
            "BUGAGARIC_AGENT_ID": name,
            "BUGAGARIC_AGENT_SLOTS": str(slots),
            "BUGAGARIC_AGENT_DIR": str(self.workspace / "var" / "agents" / name),
        }
        if workspace is not None:
            workspace.mkdir(parents=True, exist_ok=True)
            self.agent_envs[name].update({"BUGAGARIC_WORKSPACE": str(workspace),
                                          "BUGAGARIC_AGENT_DIR": str(workspace / "var" / "agent")})
        if models_dir is not None:
            self.agent_envs[name]["BUGAGARIC_MODELS_DIR"] = str(models_dir)
        self.start_agent(name)

    def start_agent(self, name: str) -> subprocess.Popen:
        return self.start_service(name, "gpu_agent", self.agent_envs[name])

    def restart(self, name: str) -> subprocess.Popen:
        """Starts a service again (after a kill), with the same settings."""
        module = {"control_plane": "control_plane", "gateway": "gateway"}.get(name)
        return self.start_agent(name) if module is None else self.start_service(name, module)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kills one service process (only it: trainers live in sessions of their own)."""
        process = self.processes[name]
        process.send_signal(sig)
        process.wait(timeout=30)

    def start_service(self, name: str, module: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log_dir = self.workspace / "var" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(log_dir / f"{name}.log", "ab")
        env = {**self.env, **(extra_env or {})}
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=env["BUGAGARIC_WORKSPACE"],  # an agent with a workspace of its own runs there, as on its own host
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.workspace / "var" / "logs" / f"{name}.log").read_text(errors="replace")

    def wait_healthy(self, timeout: float = 60.0) -> dict:
        """Until the gateway answers /api/health with a live agent."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}")
            try:
                response = httpx.get(f"{self.base_url}/api/health", timeout=2)
                last = response.text
                body = response.json()
                if response.status_code == 200 and any(a.get("alive") for a in body.get("agents", [])):
                    return body
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise TimeoutError(f"stack not healthy after {timeout}s; last answer: {last}")

    def stop(self) -> None:
        """Stops the services, then any trainer still alive (they run in sessions of their own on purpose)."""
        from gpu_agent.process_runner import kill_leftover_trainers

        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for name in self.agent_envs:
            kill_leftover_trainers(self.agent_dir(name))


def start_stack(
    workspace: Path, *, slots: int = 3, stop_grace_seconds: float = 5.0, agent_timeout_seconds: float = 10.0,
    agent_gone_seconds: float = 300.0, extra_env: dict[str, str] | None = None,
    agent_workspaces: dict[str, Path] | None = None,
) -> Stack:
    """`agent_workspaces` (name -> directory): instead of one agent in the control plane's workspace, one agent per
    entry, each with that workspace (and its models/ directory) of its own, sharing no path with the others."""
    workspace.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "BUGAGARIC_WORKSPACE": str(workspace),
        "BUGAGARIC_DATABASE_URL": f"sqlite:///{workspace / 'var' / 'bugagaric.db'}",
        "BUGAGARIC_CONTROL_PLANE_ADDRESS": "",
        "BUGAGARIC_STOP_GRACE_SECONDS": str(stop_grace_seconds),
        "BUGAGARIC_AGENT_TIMEOUT_SECONDS": str(agent_timeout_seconds),
        "BUGAGARIC_AGENT_GONE_SECONDS": str(agent_gone_seconds),
        "BUGAGARIC_HEARTBEAT_SECONDS": "1",
        "BUGAGARIC_CLUSTER_TOKEN": secrets.token_urlsafe(24),
        "BUGAGARIC_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        # A loaded 2-core machine must not turn a quick data check into a pending one (tests expect its 400).
        "BUGAGARIC_SUBMIT_CHECK_BUDGET_SECONDS": "5",
        **(extra_env or {}),
    }
    stack = Stack(workspace, free_port(), free_port(), env)
    env["BUGAGARIC_CONTROL_PLANE_PORT"] = str(stack.control_plane_port)
    env["BUGAGARIC_CONTROL_PLANE_ADDRESS"] = stack.control_plane_address
    env["BUGAGARIC_GATEWAY_PORT"] = str(stack.gateway_port)
    stack.openai_port = free_port()
    env["BUGAGARIC_OPENAI_PORT"] = str(stack.openai_port)
    env["BUGAGARIC_CONTROL_PLANE_METRICS_PORT"] = str(stack.control_plane_metrics_port)
    try:
        stack.start_service("control_plane", "control_plane")
        if agent_workspaces is None:
            stack.add_agent("agent", slots)
        for name, agent_workspace in (agent_workspaces or {}).items():
            stack.add_agent(name, slots, workspace=agent_workspace, models_dir=agent_workspace / "models")
        stack.start_service("gateway", "gateway")
        stack.wait_healthy()
    except BaseException:
        stack.stop()
        raise
    return stack
