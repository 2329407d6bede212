"""Task actions in the console, in headless Chromium against the real stack and the tiny Llama: a queued task's queue
position and priority change, "clone as new task" opening the prefilled form (over the user's draft), and stop →
resume from the monitor, which follows the new attempt (status, steps, logs, attempts) without a reload.

One agent with one device; one long task holds it (and is the one stopped and resumed, from the page and then from
the API): three trainer runs in all."""

from __future__ import annotations

import re
import time

import pytest

from tests.helpers.browser import browser_page, console_stack, launch_chromium, log_in, screenshot
from tests.helpers.tasks import wait_for_task

TIMEOUT_MS = 240_000
ENDED = {"succeeded", "failed", "stopped"}


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    with console_stack(tmp_path_factory.mktemp("console-actions"), slots=1) as running:
        yield {"stack": running.stack, "url": running.url, "api": running.api, "model": str(running.model)}


@pytest.fixture(scope="module")
def page(console):
    with launch_chromium() as browser, browser_page(browser) as pg:
        log_in(pg, console["url"], console["stack"].admin_password)
        yield pg


@pytest.fixture(scope="module")
def holder(console):
    """A long task holding the only device, saving a checkpoint every 2 steps."""
    cfg = {"model_name_or_path": console["model"], "train_data_path": "data/train.jsonl", "max_length": 64,
           "per_device_train_batch_size": 4, "learning_rate": 5e-3, "max_steps": 100000, "save_steps": 2}
    response = console["api"].post("/api/finetune/start", json={"type": "sft", "config": cfg})
    assert response.status_code == 201, response.text
    task = wait_for_task(console["api"], response.json()["id"],
                         lambda t: t["status"] in ENDED or (t["status"] == "running" and t["checkpoints"]))
    assert task["status"] == "running", task
    return task


def _open_in_app(page, path: str) -> None:
    """Client-side navigation (no page load), as a click on a link would do."""
    page.evaluate("path => { history.pushState({}, '', path); dispatchEvent(new PopStateEvent('popstate')); }", path)


def test_queued_task_priority_and_clone_over_a_draft(page, console, holder):
    api, url = console["api"], console["url"]
    queued = api.post("/api/finetune/start", json={"type": "sft", "config": {
        "model_name_or_path": console["model"], "train_data_path": "data/train.jsonl", "max_length": 48,
        "max_steps": 3, "per_device_train_batch_size": 2}}).json()
    assert queued["status"] == "queued" and queued["queue_position"] == 1

    # The task list shows where it waits.
    page.goto(f"{url}/tasks")
    row = page.locator(f"tr[data-task-id='{queued['id']}']")
    assert row.locator("[data-testid=queue-position]").get_attribute("data-position") == "1"

    # Its monitor: queue position and a priority control; the change is the server's.
    page.goto(f"{url}/tasks/{queued['id']}")
    page.locator("[data-testid=queue-position]").wait_for()
    page.fill("[data-testid=priority-input]", "12")
    page.click("[data-testid=priority-apply]")
    page.wait_for_function("document.querySelector('[data-testid=priority-input]').value === '12' && "
                           "document.querySelector('[data-testid=priority-apply]').disabled")
    assert api.get(f"/api/finetune/tasks/{queued['id']}").json()["priority"] == 12
    page.fill("[data-testid=priority-input]", "1000")  # out of range: the server's 400 is shown, nothing changes
    page.click("[data-testid=priority-apply]")
    page.locator(".banner-error", has_text="priority").wait_for()
    assert api.get(f"/api/finetune/tasks/{queued['id']}").json()["priority"] == 12
    screenshot(page, "actions-queued-priority")

    # A draft of the sft form, then "clone as new task" from the monitor: the task's config wins.
    _open_in_app(page, "/finetune?type=sft")
    page.fill("#field-model_name_or_path", "draft-model")
    page.fill("#field-max_length", "99")
    _open_in_app(page, f"/tasks/{queued['id']}")
    page.click("[data-testid=clone-task]")
    page.wait_for_url(re.compile(r".*/finetune\?type=sft$"))
    page.wait_for_function("document.querySelector('#field-model_name_or_path')?.value === "
                           f"{console['model']!r}")
    assert page.input_value("#field-max_length") == "48"
    assert page.input_value("#field-train_data_path") == "data/train.jsonl"
    assert page.locator(".banner-info", has_text=queued["id"]).count() == 1
    screenshot(page, "actions-clone-prefilled")

    assert api.delete(f"/api/finetune/tasks/{queued['id']}").json()["status"] == "stopped"


def test_stop_then_resume_from_the_monitor_is_followed_live(page, console, holder):
    api, url = console["api"], console["url"]
    page.goto(f"{url}/tasks/{holder['id']}")
    page.locator(".monitor-page[data-status=running]").wait_for()
    page.evaluate("window.__sameDocument = true")  # gone if the page were reloaded

    page.click("[data-testid=stop-task]")
    page.locator(".modal .btn-danger").click()
    page.locator(".monitor-page[data-status=stopped]").wait_for(timeout=TIMEOUT_MS)
    stopped = wait_for_task(api, holder["id"], lambda t: t["status"] == "stopped" and t["checkpoints"])
    latest = stopped["checkpoints"][-1]
    # The picker offers every checkpoint, the latest first and chosen.
    picker = page.locator("[data-testid=resume-checkpoint]")
    picker.wait_for()
    page.wait_for_function(f"document.querySelector('[data-testid=resume-checkpoint]').value === {latest['path']!r}")
    assert picker.locator("option").count() == len(stopped["checkpoints"])
    screenshot(page, "actions-stopped-resume-picker")

    page.click("[data-testid=resume-task]")
    # The open page follows the new attempt: status, steps past the checkpoint, its log lines, its attempt row.
    page.locator(".monitor-page[data-status=running]").wait_for(timeout=TIMEOUT_MS)
    page.get_by_text(re.compile(r"resuming from")).first.wait_for(timeout=TIMEOUT_MS)
    page.locator("[data-testid=attempts] tr[data-attempt='2']").wait_for(timeout=TIMEOUT_MS)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while (task := api.get(f"/api/finetune/tasks/{holder['id']}").json())["progress"]["step"] <= latest["step"]:
        assert time.monotonic() < deadline, task
        page.wait_for_timeout(250)
    points = api.get(f"/api/finetune/tasks/{holder['id']}/metrics").json()["points"]
    steps = [p["step"] for p in points if p.get("event") == "step"]
    assert latest["step"] + 1 in steps and steps.count(1) == 1  # continued, not restarted
    # The page's progress ("step N of M") shows the continued count: past the checkpoint's step.
    page.wait_for_function(
        f"Number((document.querySelector('[data-testid=progress-steps]')?.textContent.match(/\\d+/) || [0])[0]) "
        f"> {latest['step']}", timeout=TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument === true")
    screenshot(page, "actions-resumed-followed-live")

    api.delete(f"/api/finetune/tasks/{holder['id']}")
    page.locator(".monitor-page[data-status=stopped]").wait_for(timeout=TIMEOUT_MS)
    # A resume from elsewhere (the API, another tab) is followed too: the finished task's page keeps watching it.
    assert api.post(f"/api/finetune/tasks/{holder['id']}/resume").status_code == 200
    page.locator("[data-testid=attempts] tr[data-attempt='3']").wait_for(timeout=TIMEOUT_MS)
    page.locator(".monitor-page[data-status=running]").wait_for(timeout=TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument === true")
    api.delete(f"/api/finetune/tasks/{holder['id']}")
    assert wait_for_task(api, holder["id"], lambda t: t["status"] in ENDED)["status"] == "stopped"
