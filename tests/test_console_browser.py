"""The web console end to end in a real browser (headless Chromium via playwright) against the real stack:
log in (and a wrong password), start an SFT task through the generated form, watch it run (status, live logs, the
loss chart), stop a second task from its monitor, delete a finished one, save/load/delete a template, switch
language. Screenshots of every page go to test-output/screenshots/."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.browser import (
    ConsoleServer,
    ensure_console_built,
    launch_chromium,
    missing_prerequisites,
    screenshot,
)

TRAIN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """The whole stack with auth, the tiny model and data in its workspace, and the console server in front."""
    from tests.helpers.stack import start_stack
    from tests.helpers.tiny_models import build_tiny_llama, write_sft_rows

    missing = missing_prerequisites()
    assert missing is None, f"{missing}: ./run_tests.sh installs everything the browser test needs"
    ensure_console_built()
    workspace = tmp_path_factory.mktemp("console")
    stack = start_stack(workspace, slots=2, stop_grace_seconds=3.0)
    server = None
    try:
        model_dir = build_tiny_llama(workspace / "models" / "tiny-llama")
        write_sft_rows(workspace / "data" / "train.jsonl", 64)
        server = ConsoleServer(stack.base_url, workspace / "var" / "logs" / "console.log")
        url = server.url
        yield {"stack": stack, "url": url, "model": str(model_dir), "data": "data/train.jsonl"}
    finally:
        if server is not None:
            server.stop()
        stack.stop()


@pytest.fixture()
def page(console):
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 960}, locale="zh-CN")
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        yield pg
        context.close()
        assert not errors, f"uncaught errors in the page: {errors}"


def _login(page, url: str, password: str, username: str = "admin") -> None:
    page.goto(f"{url}/login")
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-submit")


def _fill(page, name: str, value: str) -> None:
    page.fill(f"#field-{name}", value)


def _wait_status(page, statuses: set[str], timeout_ms: int = TRAIN_TIMEOUT_MS) -> str:
    deadline = time.monotonic() + timeout_ms / 1000
    status = ""
    while time.monotonic() < deadline:
        status = page.get_attribute(".monitor-page", "data-status") or ""
        if status in statuses:
            return status
        page.wait_for_timeout(250)
    raise AssertionError(f"task status stayed {status!r}, wanted one of {sorted(statuses)}")


def _start_from_form(page, console, *, epochs: str) -> str:
    page.click(".type-card[data-type='sft']")
    _fill(page, "model_name_or_path", console["model"])
    _fill(page, "train_data_path", console["data"])
    _fill(page, "learning_rate", "5e-3")
    _fill(page, "num_train_epochs", epochs)
    _fill(page, "per_device_train_batch_size", "8")
    _fill(page, "max_length", "64")
    page.click("[data-testid=start]")
    page.wait_for_url(re.compile(r".*/tasks/[^/]+$"))
    return page.url.rsplit("/", 1)[1]


STREAM_PATH = re.compile(r"/api/finetune/tasks/[^/?]+/(logs|events)/stream")


def test_console_end_to_end(page, console):
    url, stack = console["url"], console["stack"]
    # Every request the page makes, and the answers to the live streams: no credential may travel in a URL.
    requests: list = []
    stream_replies: list[tuple[str, int, str]] = []
    page.on("request", lambda r: requests.append(r))
    page.on("response", lambda r: stream_replies.append((r.url, r.status, r.headers.get("content-type", "")))
            if STREAM_PATH.search(r.url) else None)

    # Not logged in: any page leads to the login page.
    page.goto(f"{url}/tasks")
    page.wait_for_url(f"{url}/login")
    screenshot(page, "01-login")

    # A wrong password is a clear error, and no session.
    _login(page, url, "not-the-password")
    error = page.locator("[data-testid=login-error]")
    error.wait_for()
    assert error.inner_text() == "用户名或密码错误"
    screenshot(page, "02-login-wrong-password")

    # Log in (back to where the user was sent away from), then "模型微调" in the sidebar: the types as cards.
    _login(page, url, stack.admin_password)
    page.wait_for_url(re.compile(r".*/(tasks|finetune)$"))
    page.get_by_role("link", name="模型微调", exact=True).click()
    page.wait_for_url(f"{url}/finetune")
    page.locator(".type-card[data-type='sft']").wait_for()
    cards = page.locator(".type-card").count()
    types = httpx.get(f"{stack.base_url}/api/finetune/templates",
                      headers={"authorization": f"Bearer {stack.admin_token}"}).json()["templates"]
    assert cards == len([t for t in types if t.get("builtin") is not False])
    page.click(".type-card[data-type='sft']")
    # Defaults from the schema/default config are filled in; advanced fields are folded.
    assert page.input_value("#field-learning_rate") == "0.00005"
    assert page.locator("#field-lora_r").count() == 0
    page.get_by_role("button", name=re.compile("高级参数")).click()
    assert page.input_value("#field-lora_r") == "8"
    screenshot(page, "03-finetune-form")

    # Inline validation before anything is sent.
    _fill(page, "model_name_or_path", "")
    _fill(page, "learning_rate", "0")
    page.click("[data-testid=start]")
    assert page.locator("[data-error-for=model_name_or_path]").inner_text() == "此项为必填"
    assert page.locator("[data-error-for=learning_rate]").inner_text() == "必须大于 0"
    assert re.search(r"/finetune", page.url)
    screenshot(page, "04-finetune-inline-errors")

    # Dry run of the data ("校验数据").
    _fill(page, "model_name_or_path", console["model"])
    _fill(page, "train_data_path", console["data"])
    _fill(page, "learning_rate", "5e-3")
    _fill(page, "max_length", "64")
    page.click("[data-testid=validate]")
    report = page.locator("[data-testid=validation-report]")
    report.wait_for(timeout=120_000)
    assert "数据校验通过" in report.inner_text()
    assert "64" in report.inner_text()
    screenshot(page, "05-finetune-validation-report")

    # Save the form as a template; it is listed.
    page.fill("[data-testid=template-name]", "tiny sft")
    page.click("[data-testid=template-save]")
    page.locator(".saved-list li", has_text="tiny sft").wait_for()

    # Start an SFT task through the form -> its monitor page; it runs, logs arrive, the loss chart draws points.
    task_id = _start_from_form(page, console, epochs="4")
    _wait_status(page, {"running", "succeeded"})
    page.wait_for_function("document.querySelectorAll('.log-row').length > 0", timeout=TRAIN_TIMEOUT_MS)
    page.wait_for_function(
        "Number(document.querySelector('[data-metric=loss]')?.dataset.points || 0) > 0", timeout=TRAIN_TIMEOUT_MS
    )
    page.locator("[data-metric=loss] canvas").first.wait_for()
    screenshot(page, "06-monitor-running")
    # The live data came over the SSE streams (fetch with the Authorization header), not the polling fallback.
    token = page.evaluate("localStorage.getItem('bugagaric.token')")
    assert token
    streams = [r for r in requests if STREAM_PATH.search(r.url)]
    assert {STREAM_PATH.search(r.url).group(1) for r in streams} == {"logs", "events"}, [r.url for r in streams]
    for r in streams:
        assert r.headers.get("authorization") == f"Bearer {token}", r.url
    live = {STREAM_PATH.search(u).group(1) for u, status, ctype in stream_replies
            if status == 200 and ctype.startswith("text/event-stream")}
    assert live == {"logs", "events"}, stream_replies
    assert _wait_status(page, {"succeeded", "failed", "stopped"}) == "succeeded"
    page.locator("[data-testid=summary]").wait_for()
    page.wait_for_function("document.querySelector('[data-testid=log-count]').textContent.match(/\\d+/)[0] > 5")
    assert int(page.get_attribute("[data-metric=loss]", "data-points")) >= 4
    screenshot(page, "07-monitor-succeeded")

    # A second task from the saved template, stopped from its monitor (with a confirmation).
    page.goto(f"{url}/finetune")
    page.locator(".saved-list li", has_text="tiny sft").get_by_role("button", name="载入").click()
    assert page.input_value("#field-model_name_or_path") == console["model"]
    second_id = _start_from_form(page, console, epochs="400")
    assert second_id != task_id
    _wait_status(page, {"running"})
    page.click("[data-testid=stop-task]")
    page.get_by_role("dialog").wait_for()
    screenshot(page, "08-monitor-stop-confirm")
    page.click("[data-testid=confirm-ok]")
    assert _wait_status(page, {"stopped", "failed", "succeeded"}, 60_000) == "stopped"

    # The task list shows both, live, with status badges; filters narrow it.
    page.get_by_role("link", name="任务列表", exact=True).click()
    page.wait_for_url(f"{url}/tasks")
    page.locator(f"tr[data-task-id='{task_id}'][data-status=succeeded]").wait_for()
    page.locator(f"tr[data-task-id='{second_id}'][data-status=stopped]").wait_for()
    screenshot(page, "09-tasks")
    page.select_option("[data-testid=filter-status]", "stopped")
    page.locator(f"tr[data-task-id='{task_id}']").wait_for(state="detached")
    page.locator(f"tr[data-task-id='{second_id}']").wait_for()
    page.select_option("[data-testid=filter-status]", "")

    # Delete the finished task from its monitor (with a confirmation) -> back on the list, gone.
    page.goto(f"{url}/tasks/{task_id}")
    page.click("[data-testid=delete-task]")
    page.get_by_role("dialog").wait_for()
    page.click("[data-testid=confirm-ok]")
    page.wait_for_url(f"{url}/tasks")
    page.locator(f"tr[data-task-id='{second_id}']").wait_for()
    assert page.locator(f"tr[data-task-id='{task_id}']").count() == 0
    gone = httpx.get(f"{stack.base_url}/api/finetune/tasks/{task_id}",
                     headers={"authorization": f"Bearer {stack.admin_token}"})
    assert gone.status_code == 404

    # Delete the saved template (with a confirmation).
    page.goto(f"{url}/finetune")
    page.locator(".saved-list li", has_text="tiny sft").get_by_role("button", name="删除").click()
    page.click("[data-testid=confirm-ok]")
    page.locator(".saved-list li", has_text="tiny sft").wait_for(state="detached")

    # English and back; the choice survives a reload.
    page.click("[data-lang=en]")
    page.get_by_role("link", name="Fine-tune").wait_for()
    page.reload()
    page.get_by_role("button", name="Start training").wait_for()
    screenshot(page, "10-finetune-english")
    page.click("[data-lang=zh]")
    page.get_by_role("link", name="模型微调", exact=True).wait_for()
    page.get_by_role("button", name="开始训练").wait_for()

    # Log out -> login page; a stale token sends the user back there too.
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url(f"{url}/login")
    page.evaluate("localStorage.setItem('bugagaric.token', 'stale-token')")
    page.goto(f"{url}/tasks")
    page.wait_for_url(re.compile(r".*/login$"))

    # No token, real or stale, ever went into a URL.
    leaked = [r.url for r in requests if "access_token" in r.url or token in r.url or "stale-token" in r.url]
    assert not leaked, leaked
