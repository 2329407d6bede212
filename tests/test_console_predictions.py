"""Evaluation after training in the console, in headless Chromium against the real stack and the tiny Llama: an SFT
run with a held-out split and eval_before answers it with the base and the tuned model; the monitor shows the scores
before -> after and the predictions beside their references (read from predictions.jsonl through the artifact
route), in English and in Chinese."""

from __future__ import annotations
import pytest

from tests.helpers.browser import SCREENSHOTS, browser_page, console_stack, launch_chromium, log_in, screenshot
from tests.helpers.tasks import wait_for_task

ENDED = {"succeeded", "failed", "stopped"}


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    with console_stack(tmp_path_factory.mktemp("console-predictions"), slots=1, sft_rows=24) as running:
        yield {"stack": running.stack, "url": running.url, "api": running.api, "model": str(running.model)}


@pytest.fixture(scope="module")
def finished_sft(console):
    cfg = {"model_name_or_path": console["model"], "train_data_path": "data/train.jsonl", "max_length": 96,
           "per_device_train_batch_size": 4, "learning_rate": 5e-3, "max_steps": 30, "eval_ratio": 0.25,
           "eval_before": True, "predict_max_new_tokens": 8, "predict_max_rows": 4}
    response = console["api"].post("/api/finetune/start", json={"type": "sft", "config": cfg})
    assert response.status_code == 201, response.text
    task = wait_for_task(console["api"], response.json()["id"], lambda t: t["status"] in ENDED, timeout=300)
    assert task["status"] == "succeeded", task
    return task


def test_the_monitor_shows_scores_before_and_after_and_the_predictions(console, finished_sft):
    api, task_id = console["api"], finished_sft["id"]
    summary = api.get(f"/api/finetune/tasks/{task_id}/artifacts/predictions_summary.json").json()
    assert summary["rows"] == 4 and set(summary) >= {"before", "after"}
    listed = {a["path"]: a["kind"] for a in api.get(f"/api/finetune/tasks/{task_id}/artifacts").json()["artifacts"]}
    assert listed["predictions.jsonl"] == "predictions"
    lines = api.get(f"/api/finetune/tasks/{task_id}/artifacts/predictions.jsonl").text.splitlines()

    with launch_chromium() as browser, browser_page(browser) as page:
        log_in(page, console["url"], console["stack"].admin_password)
        page.evaluate("() => localStorage.setItem('bugagaric.lang', 'en')")
        page.goto(f"{console['url']}/tasks/{task_id}")
        answers = page.locator("[data-testid=eval-answers]")
        answers.wait_for()
        # Each score before -> after, as the trainer wrote them.
        for name in ("exact_match", "token_f1", "rouge_l"):
            row = answers.locator(f"tr[data-metric='predict/{name}']")
            for phase in ("before", "after"):
                shown = row.locator(f"[data-phase={phase}]").inner_text()
                assert float(shown) == pytest.approx(summary[phase][name], abs=1e-4), (name, phase, shown)
        assert answers.locator("tr[data-metric='predict/token_f1'] td").first.inner_text() == "Token F1"
        page.get_by_text("4 held-out rows answered greedily").wait_for()

        # The predictions beside their references, the base model's answer beside the tuned one's.
        table = page.locator("[data-testid=predictions] table")
        table.wait_for()
        rows = table.locator("tbody tr")
        assert rows.count() == 4 == len(lines)
        headers = table.locator("thead th").all_inner_texts()
        assert headers == ["Line", "Question", "Reference", "Base model", "Tuned model"]
        first = rows.first.locator("td").all_inner_texts()
        assert first[1].startswith("What colour is the ") and first[2].startswith("The ")
        assert "Token F1" in first[3] and "ROUGE-L" in first[4]
        screenshot(page, "predictions")  # the whole monitor
        page.locator("[data-testid=evaluation]").screenshot(path=str(SCREENSHOTS / "predictions-panel.png"))

        # Chinese: the same panel speaks Chinese.
        page.evaluate("() => localStorage.setItem('bugagaric.lang', 'zh')")
        page.reload()
        page.locator("[data-testid=predictions] table").wait_for()
        assert page.locator("[data-testid=evaluation] h2").inner_text() == "评测：训练前 → 训练后"
        assert page.locator("[data-testid=predictions] thead th").all_inner_texts() == [
            "行号", "问题", "参考答案", "基座模型", "微调后模型"]
        page.locator("[data-testid=evaluation]").screenshot(path=str(SCREENSHOTS / "predictions-panel-zh.png"))
