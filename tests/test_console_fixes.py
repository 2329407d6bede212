"""What trying the console found, fixed (issue 12, item 6), checked in headless Chromium against the real stack: the
learning-rate chart's y labels fit the chart at 1440 and 1024 px, a failure shows its message once with the traceback
folded behind "details", the API docs page renders with every request off loopback aborted, and the form's
data-example panel stays inside its card. One tiny SFT run (for the chart) and one failing task, started together.
Screenshots go to test-output/screenshots/ (fixes-*.png)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.helpers.browser import browser_page, console_stack, launch_chromium, log_in, screenshot
from tests.helpers.tasks import tiny_sft_config, wait_for_task
from trainers.errors import split_failure

WIDTHS = (1440, 1024)
TERMINAL = {"succeeded", "failed", "stopped"}
# A LoRA target the tiny Llama lacks: peft raises a ValueError inside training, so the trainer prints a traceback.
MISSING_MODULE = "no_such_proj"


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """The stack with the tiny model and data, the console in front, and the two tasks already submitted."""
    with console_stack(tmp_path_factory.mktemp("console-fixes"), slots=2) as running:
        started = {}
        for name, config in (("lr", tiny_sft_config(max_steps=8, learning_rate=4.9e-5)),
                             ("failing", tiny_sft_config(max_steps=2, lora_target_modules=[MISSING_MODULE]))):
            response = running.api.post("/api/finetune/start", json={"type": "sft", "config": config})
            assert response.status_code == 201, response.text
            started[name] = response.json()["id"]
        yield {"stack": running.stack, "url": running.url, "api": running.api, **started}


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as chromium:
        yield chromium


def test_a_failure_text_splits_into_its_message_and_the_traceback():
    trainer_stderr = (
        "some library warning\n"
        "Traceback (most recent call last):\n"
        '  File "/app/trainers/common/cli.py", line 115, in main\n'
        "    train(config, context)\n"
        "ValueError: column 'answer' is not in the dataset\n"
        "error: ValueError: column 'answer' is not in the dataset\n"
    )
    message, details = split_failure(trainer_stderr)
    assert message == "ValueError: column 'answer' is not in the dataset"
    assert details.startswith("some library warning\nTraceback") and details.endswith("is not in the dataset")
    # The agent's own line above a caught traceback, and a traceback cut at its head by the stderr tail.
    assert split_failure('killed by signal 9\n  File "x.py", line 2, in f\nboom') == (
        "killed by signal 9", '  File "x.py", line 2, in f\nboom')
    assert split_failure('  File "x.py", line 2, in f\n    f()\nKeyError: 3') == (
        "KeyError: 3", '  File "x.py", line 2, in f\n    f()')
    # Without a traceback there is nothing to fold: a data error keeps its problem lines.
    data_error = "line 9: query: Field required\nerror: data/t.jsonl line 5: chosen.text: Field required"
    assert split_failure(data_error) == (
        "line 9: query: Field required\ndata/t.jsonl line 5: chosen.text: Field required", "")
    assert split_failure("") == ("", "")


def _y_axis_ink(page, metric: str) -> dict:
    """Where the y axis's labels put ink on the chart's canvas (uPlot draws them there, not in the DOM): the leftmost
    painted column left of the plot, in canvas pixels, and the canvas's place in its container."""
    return page.eval_on_selector(f"[data-metric={metric}]", """(box) => {
        const canvas = box.querySelector("canvas");
        const over = box.querySelector(".u-over");
        const c = canvas.getBoundingClientRect(), b = box.getBoundingClientRect();
        const ratio = canvas.width / c.width;
        const plotLeft = Math.floor(parseFloat(over.style.left) * ratio);
        const left = plotLeft - Math.ceil(2 * ratio);  // clear of the plot's edge
        const rows = Math.min(canvas.height, Math.ceil((parseFloat(over.style.top) + parseFloat(over.style.height) + 5) * ratio));
        const data = canvas.getContext("2d").getImageData(0, 0, left, rows).data;
        let minX = null;
        for (let y = 0; y < rows; y += 1) {
            for (let x = 0; x < left; x += 1) {
                if (data[(y * left + x) * 4 + 3] > 0) { minX = minX === null ? x : Math.min(minX, x); break; }
            }
        }
        return { minX, plotLeft, ratio, canvasLeft: c.left - b.left, canvasRight: b.right - c.right };
    }""")


def test_learning_rate_labels_fit_the_chart(console, browser):
    task = wait_for_task(console["api"], console["lr"], lambda t: t["status"] in TERMINAL, timeout=300)
    assert task["status"] == "succeeded", task["error"]
    for width in WIDTHS:
        with browser_page(browser, width=width, height=900, locale="zh-CN") as page:
            log_in(page, console["url"], console["stack"].admin_password)
            page.goto(f"{console['url']}/tasks/{console['lr']}")
            # The default charts are the training curves: loss and learning rate.
            page.wait_for_function("Number(document.querySelector('[data-metric=learning_rate]')?.dataset.points || 0) >= 4")
            assert page.locator(".metric-chart").evaluate_all("els => els.map(e => e.dataset.metric)") == [
                "loss", "learning_rate"]
            page.wait_for_timeout(300)  # one animation frame for uPlot to paint after its last resize
            ink = _y_axis_ink(page, "learning_rate")
            tick_room = (10 + 5) * ink["ratio"]  # uPlot's tick length and gap, right of the labels
            assert ink["minX"] is not None and ink["minX"] < ink["plotLeft"] - tick_room, ink  # labels drawn
            assert ink["minX"] >= 1, f"a y label touches the chart's left edge (clipped) at {width} px: {ink}"
            assert ink["canvasLeft"] >= -0.5 and ink["canvasRight"] >= -0.5, ink  # the canvas inside its box
            page.locator("[data-metric=learning_rate]").scroll_into_view_if_needed()
            screenshot(page, f"fixes-lr-chart-{width}")


def test_a_failure_shows_its_message_once_and_folds_the_traceback(console, browser):
    task = wait_for_task(console["api"], console["failing"], lambda t: t["status"] in TERMINAL, timeout=300)
    assert task["status"] == "failed" and task["error_reason"] == "trainer_error", task
    message, details = task["error"], task["error_details"]
    assert MISSING_MODULE in message and "\n" not in message, message
    assert message.count(MISSING_MODULE) == 1 and "Traceback" not in message and "error:" not in message
    assert re.search(r'File ".*", line \d+', details), details

    with browser_page(browser, width=1440, height=900, locale="zh-CN") as page:
        log_in(page, console["url"], console["stack"].admin_password)
        page.goto(f"{console['url']}/tasks/{console['failing']}")
        banner = page.locator("[data-testid=task-error]")
        banner.wait_for()
        assert page.inner_text("[data-testid=task-error-message]") == message
        folded = page.locator("[data-testid=task-error-details]")
        assert folded.evaluate("d => d.tagName === 'DETAILS' && !d.open")
        assert folded.locator("summary").inner_text() == "详情"
        assert not folded.locator("pre").is_visible()
        shown = banner.inner_text()
        assert shown.count(MISSING_MODULE) == 1 and "File \"" not in shown, shown
        screenshot(page, "fixes-failure-banner")
        folded.locator("summary").click()
        assert folded.locator("pre").is_visible() and 'File "' in folded.locator("pre").inner_text()
        screenshot(page, "fixes-failure-banner-details")


def test_the_api_docs_render_without_internet(console, browser):
    aborted: list[str] = []

    def offline(route):
        if urlsplit(route.request.url).hostname in {"127.0.0.1", "localhost", "::1"}:
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort()

    with browser_page(browser, width=1440, height=900, locale="en-US") as page:
        page.route("**/*", offline)
        page.goto(f"{console['stack'].base_url}/docs")
        page.locator(".opblock").first.wait_for()
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/finetune/start" in [p.replace("\u200b", "") for p in paths], paths
        assert not aborted, f"the docs page reached off the machine: {aborted}"
        screenshot(page, "fixes-api-docs-offline")


def test_the_data_example_stays_inside_its_card(console, browser):
    for width in WIDTHS:
        with browser_page(browser, width=width, height=900, locale="en-US") as page:
            log_in(page, console["url"], console["stack"].admin_password)
            page.goto(f"{console['url']}/finetune")
            page.locator(".type-card").first.wait_for()
            types = page.locator(".type-card").evaluate_all("els => els.map(e => e.dataset.type)")
            assert types
            for task_type in types:
                page.click(f".type-card[data-type='{task_type}']")
                page.locator("[data-testid=data-example] pre").wait_for()
                fit = page.eval_on_selector("[data-testid=data-example]", """(card) => {
                    const pre = card.querySelector("pre");
                    const c = card.getBoundingClientRect(), p = pre.getBoundingClientRect();
                    return { preRight: p.right, cardRight: c.right, viewport: document.documentElement.clientWidth,
                             scrolls: getComputedStyle(pre).overflowX, scrollWidth: pre.scrollWidth,
                             clientWidth: pre.clientWidth };
                }""")
                assert fit["preRight"] <= fit["cardRight"] + 0.5, (task_type, width, fit)
                assert fit["cardRight"] <= fit["viewport"] + 0.5, (task_type, width, fit)
                assert fit["scrollWidth"] <= fit["clientWidth"] or fit["scrolls"] in {"auto", "scroll"}, fit
            page.locator("[data-testid=data-example]").scroll_into_view_if_needed()
            screenshot(page, f"fixes-data-example-{width}")
