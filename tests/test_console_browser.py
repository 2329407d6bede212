"""The web console end to end in a real browser (headless Chromium via playwright) against the real stack:
log in (and a wrong password), start an SFT task through the generated form, watch it run (status, live logs, the
loss chart), stop a second task from its monitor, delete a finished one, save/load/delete a template, switch
language; upload a dataset (a bad one first), pick it and the agent's model in the form, train, download artifacts and
the model from the monitor and start an export. Screenshots of every page go to test-output/screenshots/."""

from __future__ import annotations

import json
import re
import tarfile
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


def _api(console, method: str, path: str, **kwargs) -> httpx.Response:
    stack = console["stack"]
    return httpx.request(method, f"{stack.base_url}/api{path}", timeout=30,
                         headers={"authorization": f"Bearer {stack.admin_token}"}, **kwargs)


def test_console_datasets_pickers_and_artifacts(page, console, tmp_path):
    """Upload a dataset on the datasets page (a bad file first: the report names its line), see it listed with its
    row count and previewed, pick it and the agent's model in the task form, train, then download an artifact and the
    model .tar from the monitor's artifacts panel (fetched with the token) and start an export from there."""
    from tests.helpers.tiny_models import write_sft_rows

    url, stack = console["url"], console["stack"]
    requests: list = []
    page.on("request", lambda r: requests.append(r))
    _login(page, url, stack.admin_password)
    page.wait_for_url(re.compile(r".*/finetune$"))

    # "数据集" in the sidebar -> the datasets page.
    page.get_by_role("link", name="数据集", exact=True).click()
    page.wait_for_url(f"{url}/datasets")
    page.locator("[data-testid=dataset-upload]").wait_for()

    # A file whose third row is not an SFT row: refused, the report names line 3, nothing is listed.
    good = write_sft_rows(tmp_path / "console-sft.jsonl", 12)
    rows = good.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "console-bad.jsonl"
    bad.write_text("\n".join(rows[:2] + [json.dumps({"unexpected": 1})] + rows[3:]) + "\n", encoding="utf-8")
    page.select_option("[data-testid=upload-type]", "sft")
    page.set_input_files("[data-testid=upload-file]", str(bad))
    page.click("[data-testid=upload-submit]")
    report = page.locator("[data-testid=upload-error][data-status='400']")
    report.wait_for()
    assert "line 3" in page.inner_text("[data-testid=upload-error-text]")
    assert page.locator("[data-testid=upload-error] tr[data-line='3']").count() >= 1
    assert page.locator("[data-testid=upload-error] tr[data-line]:not([data-line='3'])").count() == 0
    screenshot(page, "11-datasets-bad-upload")
    assert _api(console, "GET", "/finetune/datasets").json()["datasets"] == []

    # The good file: uploaded with a progress bar, listed with its 12 rows.
    page.set_input_files("[data-testid=upload-file]", str(good))
    page.click("[data-testid=upload-submit]")
    page.locator("[data-testid=upload-done]").wait_for()
    (dataset,) = _api(console, "GET", "/finetune/datasets").json()["datasets"]
    assert dataset["rows"] == 12 and dataset["type"] == "sft"
    row = page.locator(f"tr[data-dataset-id='{dataset['id']}']")
    row.wait_for()
    assert row.get_attribute("data-rows") == "12"
    assert row.locator("[data-testid=dataset-rows]").inner_text() == "12"
    screenshot(page, "12-datasets")

    # Its page: the reference to use in a task and the first rows.
    row.get_by_role("link").click()
    page.wait_for_url(f"{url}/datasets/{dataset['id']}")
    assert page.inner_text("[data-testid=dataset-ref]") == f"dataset:{dataset['id']}"
    page.locator("[data-testid=dataset-preview] pre").first.wait_for()
    assert json.loads(page.locator("[data-testid=dataset-preview] pre").first.inner_text()) == json.loads(rows[0])
    screenshot(page, "13-dataset-detail")

    # The task form: the dataset picker fills dataset:<id>, the model picker the name of the agent's model.
    model_name = Path(console["model"]).name
    deadline = time.monotonic() + 60
    while not any(m["name"] == model_name for m in _api(console, "GET", "/finetune/models").json()["models"]):
        assert time.monotonic() < deadline, "the agent never reported its model"
        time.sleep(1)
    page.goto(f"{url}/finetune?type=sft")
    page.locator(f"select[data-picker-for=train_data_path] option[value='{dataset['id']}']").wait_for(state="attached")
    page.select_option("select[data-picker-for=train_data_path]", dataset["id"])
    assert page.input_value("#field-train_data_path") == f"dataset:{dataset['id']}"
    page.locator(f"select[data-picker-for=model_name_or_path] option[value='{model_name}']").wait_for(state="attached")
    page.select_option("select[data-picker-for=model_name_or_path]", model_name)
    assert page.input_value("#field-model_name_or_path") == model_name
    screenshot(page, "14-finetune-pickers")

    # Train on it (two steps) -> the monitor's artifacts panel.
    _fill(page, "learning_rate", "5e-3")
    _fill(page, "num_train_epochs", "1")
    _fill(page, "per_device_train_batch_size", "8")
    _fill(page, "max_length", "64")
    page.click("[data-testid=start]")
    page.wait_for_url(re.compile(r".*/tasks/[^/]+$"))
    task_id = page.url.rsplit("/", 1)[1]
    task = _api(console, "GET", f"/finetune/tasks/{task_id}").json()
    assert task["config"]["train_data_path"] == f"dataset:{dataset['id']}"
    assert task["config"]["model_name_or_path"] == model_name
    assert _wait_status(page, {"succeeded", "failed", "stopped"}) == "succeeded"
    panel = page.locator("[data-testid=artifacts]")
    panel.locator("tr[data-kind=adapter]").first.wait_for()
    screenshot(page, "15-monitor-artifacts")

    # One file, then the whole model: saved by the browser, fetched with the token in the header only.
    with page.expect_download() as download:
        panel.locator("tr[data-artifact='adapter_config.json'] button").click()
    saved = download.value.path()
    assert download.value.suggested_filename == "adapter_config.json"
    assert json.loads(Path(saved).read_text(encoding="utf-8"))["peft_type"] == "LORA"
    with page.expect_download(timeout=120_000) as download:
        page.click("[data-testid=download-model]")
    assert download.value.suggested_filename == f"{task_id}-model.tar"
    with tarfile.open(download.value.path()) as tar:
        names = tar.getnames()
    assert any(n.endswith("adapter_config.json") for n in names), names
    assert not any("checkpoint-" in n for n in names), names
    token = page.evaluate("localStorage.getItem('bugagaric.token')")
    fetched = [r for r in requests if "/artifacts/" in r.url or r.url.endswith("/model")]
    assert fetched and all(r.headers.get("authorization") == f"Bearer {token}" for r in fetched)
    assert not [r.url for r in requests if token in r.url]

    # Export: merge_lora and dtype from the panel -> the new export task's monitor.
    page.select_option("[data-testid=export-dtype]", "float32")
    page.click("[data-testid=export-start]")
    page.wait_for_url(re.compile(r".*/tasks/(?!" + re.escape(task_id) + r"$)[^/]+$"))
    export_id = page.url.rsplit("/", 1)[1]
    exported = _api(console, "GET", f"/finetune/tasks/{export_id}").json()
    assert exported["type"] == "export"
    assert exported["config"]["source"] == f"task:{task_id}"
    assert exported["config"]["dtype"] == "float32" and exported["config"]["merge_lora"] is True
    page.locator(".monitor-page[data-task-id='%s']" % export_id).wait_for()
    screenshot(page, "16-monitor-export")
