"""Compare runs in the console, in headless Chromium against the real stack and the tiny Llama: two SFT runs that
differ in learning rate, picked on the task list, open one view with both loss curves on one chart, their config
difference marked and their final metrics side by side; an unknown id and another user's ids are named, not a crash.

One agent with two devices; two short trainer runs."""

from __future__ import annotations

import contextlib
import re

import httpx
import pytest

from tests.helpers.browser import browser_page, console_stack, launch_chromium, log_in, screenshot
from tests.helpers.tasks import wait_for_task

ENDED = {"succeeded", "failed", "stopped"}
RATES = (5e-3, 1e-4)


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    with console_stack(tmp_path_factory.mktemp("console-compare"), slots=2, sft_rows=16) as running:
        yield {"stack": running.stack, "url": running.url, "api": running.api, "model": str(running.model)}


@pytest.fixture(scope="module")
def runs(console):
    """Two finished tiny SFT runs, the same but for the learning rate."""
    ids = []
    for rate in RATES:
        cfg = {"model_name_or_path": console["model"], "train_data_path": "data/train.jsonl", "max_length": 48,
               "per_device_train_batch_size": 2, "learning_rate": rate, "max_steps": 4, "logging_steps": 1}
        response = console["api"].post("/api/finetune/start", json={"type": "sft", "config": cfg})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    tasks = [wait_for_task(console["api"], i, lambda t: t["status"] in ENDED, timeout=300) for i in ids]
    for task in tasks:
        assert task["status"] == "succeeded", task["error"]
    return tasks


def _losses(api: httpx.Client, task_id: str) -> list[float]:
    """The run's loss curve as the metrics route has it (start/end summaries are not points of a curve)."""
    points = api.get(f"/api/finetune/tasks/{task_id}/metrics").json()["points"]
    return [p["loss"] for p in points if isinstance(p.get("loss"), (int, float)) and p.get("event") not in ("start", "end")]


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as b:
        yield b


@contextlib.contextmanager
def _logged_in(browser, console, username: str, password: str):
    """A fresh English session of `username`."""
    with browser_page(browser) as page:
        page.context.add_init_script("localStorage.setItem('bugagaric.lang', 'en')")
        log_in(page, console["url"], password, username)
        yield page


def test_compare_two_runs_from_the_task_list(browser, console, runs):
    with _logged_in(browser, console, "admin", console["stack"].admin_password) as page:
        first, second = runs
        page.goto(f"{console['url']}/tasks")
        button = page.locator("[data-testid=compare-open]")

        # One picked: Compare stays off and says why; two: on.
        page.locator(f"tr[data-task-id='{first['id']}'] [data-testid=compare-select]").check()
        assert button.is_disabled()
        assert page.locator("[data-testid=compare-hint]").inner_text() == "Select 2 to 5 tasks to compare them."
        page.locator(f"tr[data-task-id='{second['id']}'] [data-testid=compare-select]").check()
        assert button.is_enabled() and page.locator("[data-testid=compare-hint]").count() == 0
        screenshot(page, "compare-task-list-selection")
        button.click()
        page.wait_for_url(re.compile(rf".*/compare\?ids={first['id']},{second['id']}$"))

        # One loss chart, two curves: uPlot's legend names both runs, each with its points.
        chart = page.locator(".overlay-chart[data-metric=loss]")
        chart.wait_for()
        assert chart.get_attribute("data-series") == "2" and chart.get_attribute("data-drawn") == "2"
        labels = chart.locator(".u-legend .u-series .u-label").all_inner_texts()
        assert labels[1:] == [f"{t['id'][:8]} · sft" for t in runs], labels
        losses = [_losses(console["api"], t["id"]) for t in runs]
        assert chart.get_attribute("data-counts") == ",".join(str(len(x)) for x in losses)
        assert all(len(x) >= 2 for x in losses), losses
        assert page.locator(".overlay-chart").count() >= 2  # loss and learning rate by default

        # The config diff marks the learning rate, and only what differs.
        lr = page.locator("[data-testid=compare-config] tr[data-key=learning_rate]")
        assert lr.get_attribute("data-differs") == "true"
        assert lr.locator("td").all_inner_texts() == ["0.005", "0.0001"]
        assert page.locator("[data-testid=compare-config] tr[data-key=max_steps]").get_attribute("data-differs") == "false"
        page.get_by_label("Only differing keys").check()
        differing = page.locator("[data-testid=compare-config] tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.key)")
        assert "learning_rate" in differing and "max_steps" not in differing

        # Final metrics: the last loss of each run, as the metrics route has it.
        finals = page.locator("[data-testid=compare-finals] tr[data-metric=loss] td").all_inner_texts()
        for text, series in zip(finals, losses, strict=True):
            assert float(text) == pytest.approx(series[-1], rel=1e-3)
        page.get_by_label("Only differing keys").uncheck()
        screenshot(page, "compare-runs")

        # An id that does not exist is named, and the rest is not compared alone.
        page.goto(f"{console['url']}/compare?ids={first['id']},no-such-task")
        banner = page.locator("[data-testid=compare-error][data-task-id=no-such-task]")
        banner.wait_for()
        assert "no-such-task" in banner.inner_text()
        page.get_by_text("Fewer than two of these tasks could be loaded").wait_for()


def test_another_users_runs_are_named_not_shown(browser, console, runs):
    console["stack"].create_user("bob", "bob-password-1")
    with _logged_in(browser, console, "bob", "bob-password-1") as page:
        ids = [t["id"] for t in runs]
        page.goto(f"{console['url']}/compare?ids={','.join(ids)}")
        for task_id in ids:
            banner = page.locator(f"[data-testid=compare-error][data-task-id='{task_id}']")
            banner.wait_for()
            assert task_id in banner.inner_text() and "not found" in banner.inner_text()
        assert page.locator("[data-testid=compare-config]").count() == 0
