"""Headless Chromium for the console tests: Debian's /usr/bin/chromium driven by Python playwright (browsers cannot be
downloaded here, so `playwright install` is never used), and the console server (frontend/server/serve.mjs)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
FRONTEND = REPO_ROOT / "frontend"
SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"

# Headless as root needs --no-sandbox; the rest keep Chromium from trying to reach the internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--mute-audio",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("BUGAGARIC_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def missing_prerequisites() -> str | None:
    """What the browser test lacks here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install playwright)"
    if not chromium_path():
        return "no chromium executable (apt-get install chromium)"
    if not shutil.which("node"):
        return "node is not installed"
    return None


@contextlib.contextmanager
def launch_chromium(*, headless: bool = True) -> Iterator[object]:
    """Yields a playwright Browser on the system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=headless, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    """Saves a full-page screenshot under test-output/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def ensure_console_built() -> None:
    """`npm run build` via server/ensure-build.mjs: installs (npm ci) and builds only when dist is missing or stale."""
    subprocess.run(["node", "server/ensure-build.mjs"], cwd=FRONTEND, check=True, timeout=600)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ConsoleServer:
    """The console (`npm run serve`, i.e. node server/serve.mjs) on a free port, proxying /api to `gateway_url`."""

    def __init__(self, gateway_url: str, log_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        env = {**os.environ, "BUGAGARIC_FRONTEND_PORT": str(self.port), "BUGAGARIC_FRONTEND_HOST": "127.0.0.1",
               "BUGAGARIC_GATEWAY_URL": gateway_url}
        self.process = subprocess.Popen(["node", "server/serve.mjs"], cwd=FRONTEND, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._wait()

    def _wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"console server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("console server did not come up")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class ConsoleStack:
    """The whole stack, the console in front of it, and an admin REST client."""

    stack: Any
    url: str
    api: httpx.Client
    model: Path  # the tiny Llama in the workspace (models/tiny-llama)
    workspace: Path


@contextlib.contextmanager
def console_stack(workspace: Path, *, slots: int = 1, stop_grace_seconds: float = 5.0,
                  sft_rows: int = 32, extra_env: dict[str, str] | None = None) -> Iterator[ConsoleStack]:
    """The stack on `workspace` with the tiny Llama and `sft_rows` SFT rows (data/train.jsonl) written before it
    starts (the agent reports the models it holds when it registers), and the console server in front."""
    from tests.helpers.stack import start_stack
    from tests.helpers.tiny_models import build_tiny_llama, write_sft_rows

    missing = missing_prerequisites()
    assert missing is None, f"{missing}: ./run_tests.sh installs everything the browser test needs"
    ensure_console_built()
    model = build_tiny_llama(workspace / "models" / "tiny-llama")
    write_sft_rows(workspace / "data" / "train.jsonl", sft_rows)
    stack = start_stack(workspace, slots=slots, stop_grace_seconds=stop_grace_seconds, extra_env=extra_env)
    server = None
    try:
        server = ConsoleServer(stack.base_url, workspace / "var" / "logs" / "console.log")
        with httpx.Client(base_url=stack.base_url, timeout=60,
                          headers={"authorization": f"Bearer {stack.admin_token}"}) as api:
            yield ConsoleStack(stack, server.url, api, Path(model), workspace)
    finally:
        if server is not None:
            server.stop()
        stack.stop()


@contextlib.contextmanager
def browser_page(browser, *, width: int = 1440, height: int = 960, locale: str = "en-US") -> Iterator[Any]:
    """A fresh context and page (30 s default timeout); any uncaught error in the page fails the test at the end."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale=locale)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def log_in(page, url: str, password: str, username: str = "admin") -> None:
    """Logs in through the login form and waits for the landing page."""
    page.goto(f"{url}/login")
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-submit")
    page.wait_for_url(re.compile(r".*/(tasks|finetune)$"))
