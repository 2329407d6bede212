"""start | stop | status | restart for the local system: control plane, one GPU agent, the gateway and the console.

Called by ./start_finetune_system.sh once .venv exists. Each service runs in its own session with its pid in
var/run/<name>.pid and its log in var/logs/<name>.log. Starting again starts only what is not running.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / "var" / "run"
LOG_DIR = ROOT / "var" / "logs"
# Start order; stop goes in reverse. The last argument identifies the process in /proc/<pid>/cmdline.
SERVICES = {
    "control_plane": [sys.executable, "-m", "control_plane"],
    "gpu_agent": [sys.executable, "-m", "gpu_agent"],
    "gateway": [sys.executable, "-m", "gateway"],
    "console": ["node", "frontend/server/serve.mjs"],
}
GATEWAY_PORT = int(os.environ.get("BUGAGARIC_GATEWAY_PORT", "18080"))
GATEWAY_URL = f"http://127.0.0.1:{GATEWAY_PORT}"
CONSOLE_URL = f"http://localhost:{os.environ.get('BUGAGARIC_FRONTEND_PORT', '3000')}"
# The gateway's OpenAI-compatible API (README "OpenAI-compatible API"); 0 or empty: not served.
OPENAI_PORT = os.environ.get("BUGAGARIC_OPENAI_PORT", "18081").strip()
# Prometheus endpoints (README "Prometheus"): the gateway's is on its REST port.
CONTROL_PLANE_METRICS_PORT = os.environ.get("BUGAGARIC_CONTROL_PLANE_METRICS_PORT", "9150")
AGENT_METRICS_PORT = os.environ.get("BUGAGARIC_AGENT_METRICS_PORT", "9160")
ACTIVE_STATUSES = ("queued", "starting", "running", "stopping")


def pid_of(name: str) -> int | None:
    """The service's pid if it is running (and really is that service, not a reused pid)."""
    try:
        pid = int((RUN_DIR / f"{name}.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if SERVICES[name][-1].encode() in cmdline else None


def start() -> int:
    # Everything the system creates (store, logs, spools, outputs) is readable by its owner only; the services
    # inherit this.
    os.umask(0o077)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for directory in (ROOT / "var", LOG_DIR, RUN_DIR):
        directory.chmod(0o700)  # also those an older release made
    env = {
        **os.environ,
        "BUGAGARIC_WORKSPACE": os.environ.get("BUGAGARIC_WORKSPACE", str(ROOT)),
        "BUGAGARIC_CLUSTER_TOKEN": os.environ.get("BUGAGARIC_CLUSTER_TOKEN") or cluster_token(),
    }
    if not pid_of("console") and not ensure_console_build():
        return 1
    started: dict[str, subprocess.Popen] = {}
    for name, argv in SERVICES.items():
        if pid_of(name):
            print(f"{name}: already running (pid {pid_of(name)})")
            continue
        log_path = LOG_DIR / f"{name}.log"
        with open(log_path, "ab") as log:
            os.chmod(log_path, 0o600)  # also a log made by an older release
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        (RUN_DIR / f"{name}.pid").write_text(str(process.pid))
        started[name] = process
        print(f"{name}: started (pid {process.pid}, log var/logs/{name}.log)")
    health = wait_healthy(started, timeout=90)
    if health is None:
        print("the system did not become healthy within 90 s; see var/logs/*.log", file=sys.stderr)
        return 1
    agents = ", ".join(f"{a['agent_id']} ({a['slots']} slot(s))" for a in health["agents"] if a["alive"])
    print(f"\nBugAgaric Finetune is up. Agents: {agents}")
    print(f"  Console:   {CONSOLE_URL}  (sidebar: 模型微调)")
    print(f"  REST API:  {GATEWAY_URL}/api/health")
    print(f"  API docs:  {GATEWAY_URL}/docs")
    if OPENAI_PORT not in ("", "0"):
        print(f"  OpenAI:    http://127.0.0.1:{OPENAI_PORT}/v1  (OpenAI(base_url=..., api_key=<an API key>))")
    print(f"  gRPC:      127.0.0.1:{os.environ.get('BUGAGARIC_CONTROL_PLANE_PORT', '50051')} (FinetuneService)")
    print(f"  Metrics:   {GATEWAY_URL}/metrics, http://127.0.0.1:{CONTROL_PLANE_METRICS_PORT}/metrics (control plane), "
          f"http://127.0.0.1:{AGENT_METRICS_PORT}/metrics (agent)")
    show_admin_password_once()
    print("Stop everything with ./start_finetune_system.sh stop")
    return 0


def node_required() -> tuple[int, ...] | None:
    """The oldest Node.js the console supports: frontend/package.json's `engines.node` (">=20.19.0")."""
    try:
        wanted = json.loads((ROOT / "frontend" / "package.json").read_text())["engines"]["node"]
    except (OSError, ValueError, KeyError):
        return None
    match = re.fullmatch(r">=\s*v?(\d+(?:\.\d+)*)", wanted.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def node_version(node: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"v?(\d+(?:\.\d+)*)", out.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def ensure_console_build() -> bool:
    """The console needs Node.js; npm ci and `vite build` run only when frontend/dist is missing or older than its
    sources. False (with a message saying what to do) when it cannot be built."""
    required = node_required() or (0,)
    node = shutil.which("node")
    found = node_version(node) if node else None
    if node is None or found is None or found < required:
        what = "no `node` on PATH" if node is None else f"{node} is " + ("v" + ".".join(map(str, found)) if found else "not runnable")
        print(f"the console needs Node.js {'.'.join(map(str, required))} or newer ({what}): install it and run this "
              "again", file=sys.stderr)
        return False
    if subprocess.run([node, "frontend/server/ensure-build.mjs"], cwd=ROOT).returncode != 0:
        print("building the console failed (the npm output above says why); once `cd frontend && npm ci && npm run "
              "build` works, run this again", file=sys.stderr)
        return False
    return True


def owner_only_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def cluster_token() -> str:
    """The secret the local control plane and agent share: made once, kept in an owner-only file."""
    path = ROOT / "var" / "cluster_token"
    if not path.exists():
        owner_only_file(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def show_admin_password_once() -> None:
    """The control plane wrote the generated admin password to var/admin_password on its first start."""
    password_file, shown = ROOT / "var" / "admin_password", RUN_DIR / "admin_password.shown"
    if not password_file.exists():
        return
    fingerprint = hashlib.sha256(password_file.read_bytes()).hexdigest()
    if shown.exists() and shown.read_text() == fingerprint:
        return
    username, password = password_file.read_text().split()
    print(f"\n  Admin login: {username} / {password}")
    print(f"  (shown once; it stays in {password_file.relative_to(ROOT)}, readable by you only)")
    shown.write_text(fingerprint)


def wait_healthy(started: dict[str, subprocess.Popen], timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in started.items():
            if process.poll() is not None:
                print(f"{name} exited; last lines of var/logs/{name}.log:", file=sys.stderr)
                print("\n".join((LOG_DIR / f"{name}.log").read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
                return None
        try:
            body = httpx.get(f"{GATEWAY_URL}/api/health", timeout=2).json()
            console_up = httpx.get(f"{CONSOLE_URL}/healthz", timeout=2).status_code == 200
            if console_up and any(agent.get("alive") for agent in body.get("agents", [])):
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    return None


def stop() -> int:
    stop_active_tasks()
    for name in reversed(SERVICES):
        pid = pid_of(name)
        if pid is None:
            continue
        os.killpg(pid, signal.SIGTERM)
        if not wait_gone(pid, 15):
            os.killpg(pid, signal.SIGKILL)
            wait_gone(pid, 5)
        print(f"{name}: stopped")
        (RUN_DIR / f"{name}.pid").unlink(missing_ok=True)
    kill_leftover_trainers()
    return 0


def admin_credentials() -> tuple[str, str] | None:
    """The admin's login: BUGAGARIC_ADMIN_PASSWORD (with BUGAGARIC_ADMIN_USER), else the generated one the first
    start wrote to var/admin_password."""
    if os.environ.get("BUGAGARIC_ADMIN_PASSWORD"):
        return os.environ.get("BUGAGARIC_ADMIN_USER", "admin"), os.environ["BUGAGARIC_ADMIN_PASSWORD"]
    try:
        username, password = (ROOT / "var" / "admin_password").read_text().split()
    except (OSError, ValueError):
        return None
    return username, password


def stop_active_tasks() -> None:
    """Trainers run in sessions of their own (they survive an agent restart), so a full stop ends them first,
    through the API as the admin, which records the stop on each task."""
    credentials = admin_credentials()
    if credentials is None:
        print("no admin password to stop tasks through the API (var/admin_password, BUGAGARIC_ADMIN_PASSWORD): "
              "their trainers are killed instead", file=sys.stderr)
        return
    try:
        login = httpx.post(f"{GATEWAY_URL}/api/auth/login", json=dict(zip(("username", "password"), credentials)),
                           timeout=10)
        login.raise_for_status()
        api = httpx.Client(base_url=GATEWAY_URL, timeout=10,
                           headers={"authorization": f"Bearer {login.json()['token']}"})
        with api:
            tasks = []
            for status in ACTIVE_STATUSES:
                reply = api.get("/api/finetune/tasks", params={"status": status, "limit": 500})
                reply.raise_for_status()
                tasks += reply.json()["tasks"]
            for task in tasks:
                api.delete(f"/api/finetune/tasks/{task['id']}")
                print(f"task {task['id']}: stop requested")
            deadline = time.monotonic() + 40
            while tasks and time.monotonic() < deadline:
                tasks = [t for t in tasks if api.get(f"/api/finetune/tasks/{t['id']}").json()["status"] in ACTIVE_STATUSES]
                time.sleep(0.5)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        # The gateway is down, or the login was refused: kill_leftover_trainers still finds the trainers.
        print(f"could not stop tasks through the API ({type(exc).__name__}): their trainers are killed instead",
              file=sys.stderr)


def kill_leftover_trainers() -> None:
    from gpu_agent.process_runner import kill_leftover_trainers as kill_trainers
    from gpu_agent.settings import AgentSettings

    workspace = os.environ.get("BUGAGARIC_WORKSPACE", str(ROOT))
    for pgid in kill_trainers(AgentSettings(workspace=workspace).agent_dir_path()):
        print(f"killed leftover trainer process group {pgid}")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def status() -> int:
    running = 0
    for name in SERVICES:
        pid = pid_of(name)
        running += bool(pid)
        print(f"{name}: {'running (pid %d)' % pid if pid else 'not running'}")
    try:
        body = httpx.get(f"{GATEWAY_URL}/api/health", timeout=2).json()
        print(f"health: {body.get('status')}; agents: " + ", ".join(f"{a['agent_id']} alive={a['alive']} free={a['free_slots']}/{a['slots']}" for a in body.get("agents", [])))
    except (httpx.HTTPError, ValueError):
        print("health: gateway not answering")
    return 0 if running == len(SERVICES) else 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", nargs="?", default="start", choices=["start", "stop", "status", "restart"])
    command = parser.parse_args().command
    if command == "restart":
        stop()
        return start()
    return {"start": start, "stop": stop, "status": status}[command]()


if __name__ == "__main__":
    sys.exit(main())
