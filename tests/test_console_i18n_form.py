"""The task form speaks the user's language, in headless Chromium against the real stack (no training run): in
Chinese every field of every type is labelled and explained in Chinese from its spec (never the raw key), the type
cards carry human names, the embedding form shows one training-data input, KBAlign's template pins no device, and
an unsaved edit survives leaving the page and coming back (a draft per type) until it is discarded."""

from __future__ import annotations

import re

import pytest

from tests.helpers.browser import browser_page, console_stack, launch_chromium, log_in, screenshot

CJK = re.compile(r"[\u4e00-\u9fff]")
CARDS_ZH = {"sft": "监督微调 SFT", "dpo": "偏好优化 DPO", "embedding": "向量模型 Embedding", "kbalign": "知识库对齐 KBAlign"}
CARDS_EN = {"sft": "Supervised fine-tuning (SFT)", "dpo": "Preference optimization (DPO)",
            "embedding": "Embedding model", "kbalign": "Knowledge-base alignment (KBAlign)"}


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    with console_stack(tmp_path_factory.mktemp("console-i18n-form"), slots=1, sft_rows=8) as running:
        yield {"stack": running.stack, "url": running.url, "api": running.api}


@pytest.fixture(scope="module")
def page(console):
    with launch_chromium() as browser, browser_page(browser, locale="zh-CN") as pg:
        pg.context.add_init_script("localStorage.getItem('bugagaric.lang') || "
                                   "localStorage.setItem('bugagaric.lang', 'zh')")
        log_in(pg, console["url"], console["stack"].admin_password)
        yield pg


def _open_type(page, url: str, task_type: str) -> None:
    page.goto(f"{url}/finetune?type={task_type}")
    page.locator(f".type-card[data-type='{task_type}'][aria-checked=true]").wait_for()
    page.locator("[data-field=model_name_or_path]").wait_for()


def _unfold_advanced(page) -> None:
    toggle = page.locator(".advanced-toggle")
    if toggle.count() and toggle.get_attribute("aria-expanded") != "true":
        toggle.click()
        page.locator("#advanced-fields").wait_for()


def _labels(page) -> list[dict]:
    return page.locator("[data-field]").evaluate_all("""els => els.map(e => ({
        name: e.dataset.field,
        title: e.querySelector('.field-title').textContent.trim(),
        help: e.querySelector('.field-help').textContent.trim(),
    }))""")


def test_every_type_form_is_chinese(page, console):
    url = console["url"]
    schemas = {t["type"]: t["json_schema"] for t in console["api"].get("/api/finetune/templates").json()["templates"]
               if t.get("builtin") is not False}
    page.goto(f"{url}/finetune")
    page.locator(".type-card").first.wait_for()
    cards = dict(zip(page.locator(".type-card").evaluate_all("els => els.map(e => e.dataset.type)"),
                     page.locator(".type-card .type-name").all_inner_texts()))
    assert {t: cards.get(t) for t in CARDS_ZH} == CARDS_ZH
    assert all(CJK.search(text) for text in page.locator(".type-card .type-desc").all_inner_texts())

    for task_type, schema in schemas.items():
        _open_type(page, url, task_type)
        _unfold_advanced(page)
        labels = _labels(page)
        shown = {label["name"] for label in labels}
        # Every key of the schema has its input, but an alias folds into the field it names.
        aliases = {k for k, p in schema["properties"].items() if p.get("alias_of")}
        assert shown == set(schema["properties"]) - aliases, task_type
        for label in labels:
            assert label["title"] != label["name"] and CJK.search(label["title"]), (task_type, label)
            assert CJK.search(label["help"]), (task_type, label)
        heading = page.locator(".form-card .card-head h2").inner_text()
        assert cards[task_type] in heading, heading

    # Item 6: one training-data input on the embedding form; KBAlign's template leaves the devices to the platform.
    _open_type(page, url, "embedding")
    assert page.locator("[data-field=train_data]").count() == 1
    assert page.locator("[data-field=train_data_path]").count() == 0
    assert page.locator("#field-train_data").input_value() == "data/embedding.jsonl"
    _open_type(page, url, "kbalign")
    _unfold_advanced(page)
    assert page.locator("#field-gpu_vis").input_value() == ""


def test_a_draft_survives_leaving_the_form(page, console):
    url = console["url"]
    _open_type(page, url, "sft")
    assert page.locator("[data-testid=draft-restored]").count() == 0
    page.fill("#field-learning_rate", "0.0007")
    page.fill("#field-model_name_or_path", "models/my-draft")
    # Another type's form keeps its own defaults.
    page.click(".type-card[data-type='dpo']")
    page.wait_for_function("document.querySelector('#field-learning_rate')?.value === '0.000005'")

    # Away (a full page load) and back: the edits are there, announced, in Chinese.
    page.goto(f"{url}/tasks")
    page.locator(".page").first.wait_for()
    _open_type(page, url, "sft")
    page.wait_for_function("document.querySelector('#field-learning_rate')?.value === '0.0007'")
    assert page.input_value("#field-model_name_or_path") == "models/my-draft"
    banner = page.locator("[data-testid=draft-restored]")
    assert CJK.search(banner.inner_text())
    _unfold_advanced(page)
    screenshot(page, "form-chinese")

    # Discarding the draft restores the template's defaults, and nothing comes back after another visit.
    page.click("[data-testid=discard-draft]")
    assert page.input_value("#field-learning_rate") == "0.00005"
    page.goto(f"{url}/tasks")
    _open_type(page, url, "sft")
    assert page.input_value("#field-learning_rate") == "0.00005"
    assert page.locator("[data-testid=draft-restored]").count() == 0


def test_english_mode_shows_english_names(page, console):
    page.click("[data-lang=en]")
    _open_type(page, console["url"], "sft")
    names = dict(zip(page.locator(".type-card").evaluate_all("els => els.map(e => e.dataset.type)"),
                     page.locator(".type-card .type-name").all_inner_texts()))
    assert {t: names.get(t) for t in CARDS_EN} == CARDS_EN
    assert page.locator("[data-field=learning_rate] .field-title").inner_text() == "Learning rate"
    page.click("[data-lang=zh]")
    page.locator("[data-field=learning_rate] .field-title", has_text="学习率").wait_for()
