#!/usr/bin/env python3
"""The seed's API smoke test: walks its checklist against a running system and says what works.

    ./start_finetune_system.sh
    python3 test_finetune_api.py                  # --base http://127.0.0.1:18080 by default

Checks, one line each (✅ / ❌), then `N passed, M failed`: health (ok, a live agent), login, templates (the four
types), start (a tiny SFT task), status (it runs to the end), logs, list, stop (a second, long task: stopped), delete
(both). It cleans up after itself: its tasks are deleted and their output directories removed.

Exit status: 0 all passed; 1 a check failed; 2 the system cannot be reached at all (start it first).

Credentials, the first that applies: --password (with --user, default admin); a bearer token in BUGAGARIC_API_KEY;
BUGAGARIC_ADMIN_PASSWORD (with BUGAGARIC_ADMIN_USER, default admin); the admin password file the first start wrote
(var/admin_password under the workspace, readable by its owner only).

The task trains a tiny Llama on a few rows, so it runs anywhere (CPU slots included) in seconds. Task paths must lie
in the system's workspace, so this script writes its model and data there (models/smoke-tiny-llama/ and
data/smoke/train.jsonl, made once and reused) and submits them as relative paths: run it on the host the system
runs on (the workspace is this directory unless the system was started with BUGAGARIC_WORKSPACE; --workspace says
otherwise), as paths on the agent of this host. (Other hosts' agents get their data as uploaded datasets:
POST /api/finetune/datasets, see the README.)

The HTTP part is the standard library only, so the system's python3 runs it. Building the tiny model needs torch,
transformers and tokenizers: when this interpreter lacks them, that one step runs with the project's .venv/bin/python
(which ./start_finetune_system.sh creates). The builder is the test suite's (tests/helpers/tiny_models.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MODEL_DIR = Path("models") / "smoke-tiny-llama"
DATA_FILE = Path("data") / "smoke" / "train.jsonl"
OUTPUT_DIR = Path("output") / "sft"  # where the tasks write by default: output/<type>/<task id>
# A model the agent has just been given is listed within a heartbeat or two; the control plane refuses one no agent holds.
MODEL_LISTED_SECONDS = 60
TASK_TYPES = ("sft", "dpo", "embedding", "kbalign")
ACTIVE = {"queued", "starting", "running", "stopping"}
TERMINAL = {"succeeded", "failed", "stopped"}
EXIT_FAILED, EXIT_UNREACHABLE = 1, 2
# The tiny task: a few steps on 24 rows, short sequences, a learning rate a LoRA on a random tiny Llama learns with.
TINY_SFT = {
    "model_name_or_path": str(MODEL_DIR), "train_data_path": str(DATA_FILE),
    "use_lora": True, "learning_rate": 5e-3, "max_steps": 6, "per_device_train_batch_size": 8, "max_length": 64,
    "logging_steps": 1,
}
ROWS = 24


class CheckFailed(Exception):
    """A check's ❌ line: the message says what went wrong."""


class Unreachable(Exception):
    """Nothing answers at --base."""


def _symbols() -> tuple[str, str, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✅❌⏭".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "[ok]", "[FAIL]", "[skip]"
    return "✅", "❌", "⏭"


OK, FAIL, SKIP = _symbols()


# --- HTTP (urllib only) ----------------------------------------------------------------------------------------------


class Api:
    def __init__(self, base: str, timeout: float):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.token: str | None = None

    def call(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> tuple[int, object]:
        """(status, parsed JSON body). Raises Unreachable when nothing answers."""
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("accept", "application/json")
        if data is not None:
            request.add_header("content-type", "application/json")
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"{self.base} does not answer ({reason})") from None
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")[:200]

    def expect(self, method: str, path: str, status: int | tuple[int, ...] = 200, **kwargs) -> object:
        got, body = self.call(method, path, **kwargs)
        wanted = (status,) if isinstance(status, int) else status
        if got not in wanted:
            raise CheckFailed(f"{method} {path} answered {got}: {describe_error(body)}")
        return body


def describe_error(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('code')}: {error.get('message')}"
    return str(body)[:300]


# --- credentials -----------------------------------------------------------------------------------------------------


def credentials(args: argparse.Namespace, workspace: Path) -> tuple[str, str | None, str | None, str]:
    """(kind, username, secret, where it came from); kind is "password" or "token"."""
    if args.password is not None:
        return "password", args.user or "admin", args.password, "--password"
    if os.environ.get("BUGAGARIC_API_KEY"):
        return "token", None, os.environ["BUGAGARIC_API_KEY"], "BUGAGARIC_API_KEY"
    if os.environ.get("BUGAGARIC_ADMIN_PASSWORD"):
        return ("password", os.environ.get("BUGAGARIC_ADMIN_USER") or "admin", os.environ["BUGAGARIC_ADMIN_PASSWORD"],
                "BUGAGARIC_ADMIN_PASSWORD")
    path = Path(os.environ.get("BUGAGARIC_ADMIN_PASSWORD_FILE") or "var/admin_password")
    path = path if path.is_absolute() else workspace / path
    shown_path = _shown(path, workspace)
    try:
        username, password = path.read_text().split()
    except FileNotFoundError:
        raise CheckFailed(f"no credentials: pass --user/--password or set BUGAGARIC_API_KEY ({shown_path} does not "
                          "exist: the first start writes it unless BUGAGARIC_ADMIN_PASSWORD was set)") from None
    except PermissionError:
        raise CheckFailed(f"no credentials: {shown_path} is not readable by you (it is its owner's only); pass "
                          "--user/--password or set BUGAGARIC_API_KEY") from None
    except ValueError:
        raise CheckFailed(f"no credentials: {shown_path} does not hold '<user> <password>'") from None
    return "password", username, password, shown_path


def _shown(path: Path, workspace: Path) -> str:
    try:
        return str(path.relative_to(workspace))
    except ValueError:
        return str(path)


# --- the tiny model and data -----------------------------------------------------------------------------------------


def has_model_libraries(python: str) -> bool:
    if python == sys.executable:
        return all(importlib.util.find_spec(name) for name in ("torch", "transformers", "tokenizers"))
    probe = subprocess.run([python, "-c", "import torch, transformers, tokenizers"], capture_output=True)
    return probe.returncode == 0


def builder_python() -> str:
    """This interpreter when it has torch/transformers/tokenizers, else the project's .venv."""
    if has_model_libraries(sys.executable):
        return sys.executable
    venv = ROOT / ".venv" / "bin" / "python"
    if venv.exists() and has_model_libraries(str(venv)):
        return str(venv)
    venv_state = "lacks them too" if venv.exists() else "does not exist (./start_finetune_system.sh creates it)"
    raise CheckFailed(f"building the tiny model needs torch, transformers and tokenizers: {sys.executable} lacks "
                      f"them and {_shown(venv, ROOT)} {venv_state}")


BUILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.helpers.tiny_models import build_tiny_llama
build_tiny_llama(Path(sys.argv[2]))
"""


def ensure_model(workspace: Path) -> str:
    """models/smoke-tiny-llama in the workspace, built once (atomically: a half-built one is never used)."""
    target = workspace / MODEL_DIR
    if (target / "config.json").is_file():
        return f"{MODEL_DIR} (already there)"
    python = builder_python()
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.monotonic()
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    built = subprocess.run([python, "-c", BUILD, str(ROOT), str(partial)], capture_output=True, text=True, env=env)
    if built.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = " | ".join((built.stderr or built.stdout).strip().splitlines()[-3:])
        raise CheckFailed(f"building the tiny model with {python} failed: {tail}")
    try:
        partial.rename(target)
    except OSError:  # another run made it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    who = "this python" if python == sys.executable else _shown(Path(python), ROOT)
    return f"{MODEL_DIR} built with {who} in {time.monotonic() - started:.0f} s"


def ensure_data(workspace: Path) -> None:
    target = workspace / DATA_FILE
    if target.is_file():
        return
    sys.path.insert(0, str(ROOT))
    from tests.helpers.tiny_models import write_sft_rows  # standard library only

    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    write_sft_rows(partial, ROWS)
    os.replace(partial, target)


# --- the checks ------------------------------------------------------------------------------------------------------


class Smoke:
    def __init__(self, api: Api, args: argparse.Namespace, workspace: Path):
        self.api, self.args, self.workspace = api, args, workspace
        self.passed = self.failed = self.skipped = 0
        self.tasks: list[str] = []  # every task this run created, for delete and cleanup
        self.main_task: dict | None = None
        self.agents_alive = False
        self.logged_in = False

    def report(self, symbol: str, name: str, message: str) -> None:
        _progress("")
        print(f"{symbol} {name}: {message}", flush=True)

    def run(self, name: str, check, needs: str | None = None) -> bool:
        if needs:
            self.skipped += 1
            self.report(SKIP, name, f"not run ({needs})")
            return False
        try:
            message = check()
        except CheckFailed as exc:
            self.failed += 1
            self.report(FAIL, name, str(exc))
            return False
        except Unreachable as exc:
            if name == "health":
                raise  # nothing answers at all: exit 2
            self.failed += 1
            self.report(FAIL, name, str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a bug here must still end in a readable line
            self.failed += 1
            self.report(FAIL, name, f"{type(exc).__name__}: {exc}")
            return False
        self.passed += 1
        self.report(OK, name, message)
        return True

    # health -- no token needed
    def health(self) -> str:
        status, body = self.api.call("GET", "/api/health")
        if not isinstance(body, dict):
            raise CheckFailed(f"GET /api/health answered {status}: {str(body)[:200]} (is --base the gateway?)")
        if status != 200:
            raise CheckFailed(f"{body.get('status', status)}: {describe_error(body)}")
        alive = [a for a in body.get("agents", []) if a.get("alive")]
        self.agents_alive = bool(alive)
        if body.get("status") != "ok" or not alive:
            known = len(body.get("agents", []))
            raise CheckFailed(f"status {body.get('status')}, no live agent ({known} known; is the gpu_agent running? "
                              "see ./start_finetune_system.sh status)")
        return f"{body['status']}, {len(alive)} agent(s) alive"

    def login(self) -> str:
        kind, username, secret, source = credentials(self.args, self.workspace)
        if kind == "token":
            self.api.token = secret
        else:
            status, body = self.api.call("POST", "/api/auth/login", {"username": username, "password": secret})
            if status != 200:
                raise CheckFailed(f"as {username} (password from {source}): {status} {describe_error(body)}")
            self.api.token = body["token"]
        status, me = self.api.call("GET", "/api/auth/me")
        if status != 200:
            raise CheckFailed(f"the token from {source} is not accepted: {status} {describe_error(me)}")
        self.logged_in = True
        how = f"bearer token from {source}" if kind == "token" else f"password from {source}"
        return f"as {me['username']} (role {me['role']}), {how}"

    def templates(self) -> str:
        body = self.api.expect("GET", "/api/finetune/templates")
        builtin = {t["type"]: t for t in body["templates"] if t.get("builtin")}
        missing = [t for t in TASK_TYPES if t not in builtin]
        if missing:
            raise CheckFailed(f"no built-in template for {', '.join(missing)} (got {', '.join(builtin) or 'none'})")
        empty = [t for t in TASK_TYPES if not builtin[t].get("json_schema", {}).get("properties")]
        if empty:
            raise CheckFailed(f"template without a config schema: {', '.join(empty)}")
        return ", ".join(TASK_TYPES)

    def submit(self, **overrides) -> dict:
        task = self.api.expect("POST", "/api/finetune/start", 201, body={"type": "sft", "config": {**TINY_SFT, **overrides}})
        self.tasks.append(task["id"])
        return task

    def start(self) -> str:
        made = ensure_model(self.workspace)
        ensure_data(self.workspace)
        self.wait_for_model(str(MODEL_DIR))
        task = self.submit()
        self.main_task = task
        where = f"position {task['queue_position']}" if task.get("queue_position") else task["status"]
        return f"sft task {task['id']} {task['status']} ({where}); model {made}"

    def wait_for_model(self, path: str) -> None:
        """Until an agent lists the model (by its path under the agent's workspace) in GET /api/finetune/models."""
        deadline = time.monotonic() + MODEL_LISTED_SECONDS
        while True:
            models = self.api.expect("GET", "/api/finetune/models")["models"]
            if any(path in (m["name"], f"models/{m['name']}") for m in models):
                return
            if time.monotonic() > deadline:
                raise CheckFailed(f"no agent lists {path} after {MODEL_LISTED_SECONDS} s (GET /api/finetune/models); is "
                                  "the agent's models directory (BUGAGARIC_MODELS_DIR) this workspace's models/?")
            time.sleep(1)

    def wait(self, task_id: str, until: set[str], timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self.api.expect("GET", f"/api/finetune/tasks/{task_id}")
            progress = task.get("progress") or {}
            _progress(f"{what}: {task['status']} step {progress.get('step', 0)}/{progress.get('total_steps', 0)}")
            if task["status"] in until:
                return task
            if task["status"] in TERMINAL:
                raise CheckFailed(f"task ended {task['status']} ({task.get('error_reason')}): {last_line(task.get('error'))}")
            if time.monotonic() > deadline:
                queued = f", queue position {task['queue_position']}" if task.get("queue_position") else ""
                raise CheckFailed(f"still {task['status']} after {timeout:.0f} s{queued}")
            time.sleep(0.5)

    def status(self) -> str:
        started = time.monotonic()
        task = self.wait(self.main_task["id"], {"succeeded"}, self.args.timeout, "status")
        self.main_task = task
        progress = task["progress"]
        step, total = progress.get("step"), progress.get("total_steps")
        if total and step != total:
            raise CheckFailed(f"succeeded at step {step}/{total}")
        loss = f", loss {progress['loss']:.3f}" if progress.get("loss") is not None else ""
        return f"succeeded after {time.monotonic() - started:.0f} s ({step}/{total} steps{loss})"

    def logs(self) -> str:
        task_id = self.main_task["id"]
        body = self.api.expect("GET", f"/api/finetune/tasks/{task_id}/logs", params={"limit": 100})
        lines = body.get("lines") or []
        if not lines:
            raise CheckFailed(f"no log lines for task {task_id}")
        seqs = [line["seq"] for line in lines]
        if seqs != sorted(seqs):
            raise CheckFailed(f"lines out of order: seqs {seqs[:10]}…")
        return f"{len(lines)} line(s), seq {seqs[0]}..{seqs[-1]}"

    def list(self) -> str:
        task_id = self.main_task["id"]
        body = self.api.expect("GET", "/api/finetune/tasks", params={"type": "sft", "limit": 500})
        ids = [t["id"] for t in body["tasks"]]
        if task_id not in ids:
            raise CheckFailed(f"task {task_id} is not among the {len(ids)} listed (of {body.get('total')})")
        return f"task {task_id} listed ({body.get('total')} sft task(s) in all)"

    def stop(self) -> str:
        task = self.submit(max_steps=100000)
        self.wait(task["id"], {"running"}, self.args.timeout, "stop: waiting for the long task to run")
        started = time.monotonic()
        answer = self.api.expect("DELETE", f"/api/finetune/tasks/{task['id']}")
        if answer["status"] not in {"stopping", "stopped"}:
            raise CheckFailed(f"stop answered status {answer['status']}")
        self.wait(task["id"], {"stopped"}, 120, "stop")
        return f"task {task['id']} running -> stopped in {time.monotonic() - started:.1f} s"

    def delete(self) -> str:
        for task_id in self.tasks:
            self.end(task_id)
            self.api.expect("DELETE", f"/api/finetune/tasks/{task_id}/delete")
            status, _ = self.api.call("GET", f"/api/finetune/tasks/{task_id}")
            if status != 404:
                raise CheckFailed(f"task {task_id} still answers {status} after its delete")
        deleted, self.tasks = self.tasks, []
        for task_id in deleted:
            self.remove_output(task_id)
        try:
            (self.workspace / OUTPUT_DIR).rmdir()  # when empty
        except OSError:
            pass
        return f"{len(deleted)} task(s) deleted (404 afterwards)"

    def end(self, task_id: str) -> None:
        """Stops a task of ours that is still active and waits for it to end (only finished tasks can be deleted)."""
        status, task = self.api.call("GET", f"/api/finetune/tasks/{task_id}")
        if status == 200 and task["status"] in ACTIVE:
            self.api.call("DELETE", f"/api/finetune/tasks/{task_id}")
            self.wait(task_id, TERMINAL, 120, f"ending task {task_id}")

    def remove_output(self, task_id: str) -> None:
        """The platform keeps a deleted task's output (it is the user's model); these are ours, so they go too."""
        directory = self.workspace / OUTPUT_DIR / task_id
        marker = directory / ".bugagaric-task.json"
        try:
            if json.loads(marker.read_text()).get("task_id") == task_id:
                shutil.rmtree(directory)
        except (OSError, ValueError):
            pass  # not on this host, or not readable: left where it is

    def cleanup(self) -> None:
        """After a failed check: whatever of ours is left is stopped and deleted, quietly."""
        for task_id in self.tasks:
            try:
                self.end(task_id)
                self.api.call("DELETE", f"/api/finetune/tasks/{task_id}/delete")
                self.remove_output(task_id)
            except Exception:  # noqa: BLE001 - best effort
                pass
        self.tasks = []


def last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no error text)"


def _progress(text: str) -> None:
    """A transient line on a terminal while waiting; nothing when the output goes to a file or a pipe."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + (f"  … {text}" if text else ""))
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=os.environ.get("BUGAGARIC_API_BASE", "http://127.0.0.1:18080"),
                        help="the gateway (or the console, which proxies /api); default %(default)s")
    parser.add_argument("--user", help="log in as this user (default admin; needs --password)")
    parser.add_argument("--password", help="the user's password")
    parser.add_argument("--workspace", type=Path, default=Path(os.environ.get("BUGAGARIC_WORKSPACE") or ROOT),
                        help="the system's workspace, where the tiny model and data are written (default: "
                        "$BUGAGARIC_WORKSPACE, else this directory)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a task may take to run (default 300)")
    args = parser.parse_args(argv)
    if args.user and args.password is None:
        parser.error("--user needs --password")
    workspace = args.workspace.expanduser().resolve()
    api = Api(args.base, timeout=30)
    smoke = Smoke(api, args, workspace)
    print(f"BugAgaric Finetune API smoke test against {api.base} (workspace {workspace})", flush=True)
    try:
        smoke.run("health", smoke.health)
        smoke.run("login", smoke.login)
        no_login = None if smoke.logged_in else "needs a login"
        no_agent = no_login or (None if smoke.agents_alive else "no live agent")
        smoke.run("templates", smoke.templates, needs=no_login)
        started = smoke.run("start", smoke.start, needs=no_agent)
        no_task = no_agent or (None if started else "no task was started")
        smoke.run("status", smoke.status, needs=no_task)
        smoke.run("logs", smoke.logs, needs=no_task)
        smoke.run("list", smoke.list, needs=no_task)
        smoke.run("stop", smoke.stop, needs=no_agent)
        smoke.run("delete", smoke.delete, needs=no_login or (None if smoke.tasks else "no task was started"))
    except Unreachable as exc:
        smoke.report(FAIL, "health", str(exc))
        print(f"the system is not reachable at {api.base}: start it with ./start_finetune_system.sh "
              "(./start_finetune_system.sh status says what runs), or pass --base", flush=True)
        print(f"{smoke.passed} passed, {smoke.failed + 1} failed", flush=True)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("\ninterrupted; stopping and deleting this run's tasks", flush=True)
        smoke.failed += 1
    finally:
        try:
            smoke.cleanup()
        except Unreachable:
            pass
    summary = f"{smoke.passed} passed, {smoke.failed} failed"
    print(summary + (f", {smoke.skipped} not run" if smoke.skipped else ""), flush=True)
    return 0 if smoke.failed == smoke.skipped == 0 else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
