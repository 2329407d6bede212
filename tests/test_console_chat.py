"""The chat panel in the console, in headless Chromium against the real stack and a tiny SFT task run first: the
tuned model's answer streams in token by token (the page shows it growing), the side-by-side mode answers the same
question with the base and the tuned model, and "close chat" frees the device. Prints the time from the first
question ("open chat": the model loads on the agent) to the first token shown."""

from __future__ import annotations

import pytest

from tests.helpers.browser import browser_page, console_stack, launch_chromium, log_in, screenshot
from tests.helpers.tasks import tiny_sft_config, train_until_published

TIMEOUT_MS = 240_000

# Records every text the answers show while they stream (a MutationObserver), so the test sees tokens arrive one by
# one rather than only the final text.
_RECORD_TEXTS = """() => {
  window.__chatTexts = {base: [], tuned: []};
  const panel = document.querySelector('[data-testid=chat-panel]');
  new MutationObserver(() => {
    for (const model of ['base', 'tuned']) {
      const el = document.querySelector(`[data-testid=chat-answer-${model}] [data-testid=chat-text]`);
      const seen = window.__chatTexts[model];
      if (el && el.textContent && seen[seen.length - 1] !== el.textContent) seen.push(el.textContent);
    }
  }).observe(panel, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    with console_stack(tmp_path_factory.mktemp("console-chat"), slots=1) as running:
        yield {"stack": running.stack, "url": running.url, "api": running.api}


@pytest.fixture(scope="module")
def tuned(console):
    return train_until_published(console["api"], "sft", tiny_sft_config(max_steps=150, learning_rate=1e-2,
                                                                        max_length=64))


@pytest.fixture(scope="module")
def page(console):
    with launch_chromium() as browser, browser_page(browser) as pg:
        log_in(pg, console["url"], console["stack"].admin_password)
        yield pg


def _answer_done(page, model: str) -> None:
    page.wait_for_selector(f"[data-testid=chat-answer-{model}][data-state=done]", timeout=TIMEOUT_MS)


def test_chat_streams_tokens_and_side_by_side_answers_twice(page, console, tuned):
    api = console["api"]
    page.goto(f"{console['url']}/tasks/{tuned['id']}")
    page.locator("[data-testid=chat-panel]").wait_for()
    page.evaluate(_RECORD_TEXTS)
    page.fill("[data-testid=chat-question]", "What colour is the apple?")
    page.fill("[data-testid=chat-passages]", "The apple is red.\nThe sky is blue.")
    page.fill("[data-testid=chat-max-new-tokens]", "24")
    page.click("[data-testid=chat-send]")
    _answer_done(page, "tuned")
    tuned_answer = page.locator("[data-testid=chat-answer-tuned]")
    assert int(tuned_answer.get_attribute("data-tokens")) >= 2
    shown = page.evaluate("window.__chatTexts.tuned")
    final = tuned_answer.locator("[data-testid=chat-text]").inner_text()
    assert len(shown) >= 2 and shown[-1].strip() == final.strip() and final.strip(), shown  # it grew as tokens came
    first = tuned_answer.locator("[data-testid=chat-first-token]").inner_text()
    print(f"\nconsole: open chat -> {first} (tiny SFT model, CPU)")
    assert api.get("/api/health").json()["agents"][0]["busy_devices"] == [0]

    # Side by side: the same input answered by the base model and by the tuned one (two calls, one session).
    page.check("[data-testid=chat-side-by-side]")
    page.click("[data-testid=chat-send]")
    _answer_done(page, "base")
    _answer_done(page, "tuned")
    for model in ("base", "tuned"):
        answer = page.locator(f"[data-testid=chat-answer-{model}]")
        assert int(answer.get_attribute("data-tokens")) >= 1
        assert answer.locator("[data-testid=chat-text]").inner_text().strip()
    assert page.locator("[data-testid=chat-answer-base]").bounding_box()["x"] < \
        page.locator("[data-testid=chat-answer-tuned]").bounding_box()["x"]
    assert console["stack"].log("control_plane").count(f"for task {tuned['id']} open on agent") == 1
    page.locator("[data-testid=chat-panel]").scroll_into_view_if_needed()
    screenshot(page, "chat-side-by-side")

    # Closing frees the device at once.
    page.click("[data-testid=chat-close]")
    page.locator("[data-testid=chat-panel] .banner-info").wait_for()
    assert api.get("/api/health").json()["agents"][0]["busy_devices"] == []
