"""Predictions after training (trainers.common.predictions through the training skeleton): a real tiny SFT run with
a held-out split answers it before and after training and scores the answers; the rows and references of sft (RAG and
chat rows) and dpo; the config checks of the options."""

from __future__ import annotations

import json

import pytest

from tests.helpers.tiny_models import write_sft_rows
from trainers.artifact_kinds import artifact_kind
from trainers.common.predictions import Predictions, PredictRow
from trainers.common.text_scores import answer_scores, mean_answer_scores
from trainers.errors import ConfigError
from trainers.registry import get


def _ctx(task_type, workspace):
    from trainers.common.cli import RunContext

    return RunContext(task_type, workspace, workspace / "output", "task-p", None)


def test_a_tiny_sft_run_writes_scored_predictions_before_and_after(tiny_llama_dir, tmp_path, monkeypatch):
    from trainers.sft.train import SftWorkflow

    write_sft_rows(tmp_path / "data/train.jsonl", 40)
    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(metrics))
    config = get("sft").parse_config({
        "model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl", "learning_rate": 5e-3,
        "per_device_train_batch_size": 4, "max_steps": 40, "max_length": 128, "eval_ratio": 0.2,
        "eval_before": True, "predict_max_new_tokens": 12, "predict_max_rows": 5,
    })
    summary = SftWorkflow(config, _ctx("sft", tmp_path)).run()

    out = tmp_path / "output"
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 5  # 8 held out, capped by predict_max_rows
    for line in lines:
        assert set(line) == {"line", "question", "prompt", "reference", "prediction", "scores", "before"}
        assert line["question"].startswith("What colour is the ") and line["reference"].startswith("The ")
        assert line["prompt"][-1]["role"] == "user" and line["question"] in line["prompt"][-1]["content"]
        assert line["scores"] == answer_scores(line["prediction"], line["reference"])
        assert line["before"]["scores"] == answer_scores(line["before"]["prediction"], line["reference"])
    after = mean_answer_scores([line["scores"] for line in lines])
    before = mean_answer_scores([line["before"]["scores"] for line in lines])
    # In 40 steps the tiny Llama learns the shape "The <topic> is ..." of the answers; the random base answers
    # byte soup.
    assert after["token_f1"] > before["token_f1"] + 0.25 and after["rouge_l"] > before["rouge_l"] + 0.25, \
        (before, after, lines)

    written = json.loads((out / "predictions_summary.json").read_text(encoding="utf-8"))
    assert written == summary["predictions"]
    assert written["before"] == before and written["after"] == after and written["rows"] == 5
    assert written["max_new_tokens"] == 12 and "eval_ratio 0.2" in written["source"]

    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    predict = [e for e in events if e["event"] == "predict"]
    assert [(e["phase"], e["step"]) for e in predict] == [("before", 0), ("after", 40)]
    for event, means in zip(predict, (before, after)):
        assert event["predict/rows"] == 5
        assert {k: event[f"predict/{k}"] for k in means} == means
    names = [e["event"] for e in events]
    assert names.index("predict") < names.index("step")  # the base model is scored before the first step

    assert artifact_kind("predictions.jsonl") == artifact_kind("predictions_summary.json") == "predictions"


def test_no_held_out_rows_or_predictions_off_write_nothing(tiny_llama_dir, tmp_path, monkeypatch):
    from trainers.sft.train import SftWorkflow

    write_sft_rows(tmp_path / "data/train.jsonl", 8)
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(tmp_path / "metrics.jsonl"))
    base = {"model_name_or_path": str(tiny_llama_dir), "train_data_path": "data/train.jsonl", "max_steps": 1,
            "max_length": 96, "per_device_train_batch_size": 4}
    for extra in ({}, {"eval_ratio": 0.25, "predict_after_training": False}):
        summary = SftWorkflow(get("sft").parse_config({**base, **extra}), _ctx("sft", tmp_path)).run()
        assert "predictions" not in summary and not (tmp_path / "output/predictions.jsonl").exists()
    assert "predict" not in (tmp_path / "metrics.jsonl").read_text()


def test_rows_and_references_of_each_type(tiny_llama_dir, tmp_path):
    """sft: chosen.text of a RAG row (asked with its passages), the last assistant turn of a chat row; dpo: the chosen
    answer. Rows that cannot fit max_length are not asked; at most `limit` rows."""
    from trainers.common.workflow import Rows
    from trainers.dpo.train import DpoWorkflow
    from trainers.sft.spec import parse_row
    from trainers.sft.train import SftWorkflow

    sft_config = get("sft").parse_config({"model_name_or_path": str(tiny_llama_dir), "train_data_path": "x.jsonl",
                                          "max_length": 64})
    workflow = SftWorkflow(sft_config, _ctx("sft", tmp_path))
    tokenizer = workflow.load_processor()
    rag = {"query": "Where is it?", "retrieval_result": ["It is in the box."], "chosen": {"text": "In the box."}}
    chat = {"messages": [{"role": "user", "content": "Hi there?"}, {"role": "assistant", "content": "Hello."},
                         {"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "Red."}]}
    too_long = {"query": "long " * 80, "chosen": {"text": "x"}}
    rows = Rows([parse_row(r) for r in (rag, too_long, chat)], [1, 2, 3], "eval_data_path", "eval.jsonl")
    asked = workflow.prediction_rows(rows, tokenizer, limit=10)
    assert [(r.line, r.question, r.reference) for r in asked] == [(1, "Where is it?", "In the box."),
                                                                   (3, "Colour?", "Red.")]
    assert "[1] It is in the box." in asked[0].prompt[-1]["content"]  # the RAG prompt the task trains on
    assert [m["content"] for m in asked[1].prompt] == ["Hi there?", "Hello.", "Colour?"]
    assert len(workflow.prediction_rows(rows, tokenizer, limit=1)) == 1

    from trainers.dpo.spec import PreferenceRow

    dpo_config = get("dpo").parse_config({"model_name_or_path": str(tiny_llama_dir), "train_data_path": "x.jsonl",
                                          "max_length": 64})
    pair = PreferenceRow.model_validate({"query": "Colour?", "chosen": {"text": "Red."},
                                         "rejected": {"text": "Purple."}})
    asked = DpoWorkflow(dpo_config, _ctx("dpo", tmp_path)).prediction_rows(
        Rows([pair], [4], "eval_data_path", "eval.jsonl"), tokenizer, limit=10)
    assert [(r.line, r.question, r.reference) for r in asked] == [(4, "Colour?", "Red.")]


def test_predictions_record_and_write_without_a_model(tmp_path):
    from trainers.common.metrics import MetricsEmitter

    rows = [PredictRow(1, "q1", [{"role": "user", "content": "q1"}], "巴黎"),
            PredictRow(2, "q2", [{"role": "user", "content": "q2"}], "the red box")]
    emitter = MetricsEmitter(tmp_path / "m.jsonl")
    predictions = Predictions(rows, emitter, source="eval.jsonl", max_new_tokens=8, setting="rag")
    with pytest.raises(ValueError, match="needs the answers after training"):
        predictions.write(tmp_path)
    with pytest.raises(ValueError, match="1 answers for 2 rows"):
        predictions.record("after", ["x"])
    means = predictions.record("after", [" 巴黎。 ", "the red"])  # exact; then P 1, R 2/3 -> F1 and ROUGE-L 0.8
    assert means == {"exact_match": 0.5, "token_f1": 0.9, "rouge_l": 0.9}
    summary = predictions.write(tmp_path)
    assert summary == {"rows": 2, "source": "eval.jsonl", "max_new_tokens": 8, "setting": "rag",
                       "scores": ["exact_match", "token_f1", "rouge_l"], "after": means}
    first = json.loads((tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["prediction"] == "巴黎。" and "before" not in first  # Chinese kept as text, not \\u escapes
    assert "巴黎" in (tmp_path / "predictions.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize("type_name", ["sft", "dpo"])
@pytest.mark.parametrize("extra, field, words", [
    ({"eval_before": True, "eval_ratio": 0.0}, "eval_before", "needs held-out rows"),
    ({"eval_before": True, "eval_ratio": 0.1, "predict_after_training": False}, "eval_before",
     "needs predict_after_training"),
    ({"predict_max_new_tokens": 0}, "predict_max_new_tokens", "greater than or equal to 1"),
    ({"predict_max_rows": "5"}, "predict_max_rows", "valid integer"),
])
def test_bad_prediction_options_name_the_field(type_name, extra, field, words):
    with pytest.raises(ConfigError) as caught:
        get(type_name).parse_config({"model_name_or_path": "m", "train_data_path": "d.jsonl", **extra})
    assert caught.value.field == field and words in str(caught.value), str(caught.value)


def test_prediction_options_defaults_and_schema():
    for type_name in ("sft", "dpo"):
        task_type = get(type_name)
        config = task_type.parse_config({"model_name_or_path": "m", "train_data_path": "d.jsonl",
                                         "eval_data_path": "e.jsonl", "eval_before": True})
        assert (config.predict_after_training, config.predict_max_new_tokens, config.predict_max_rows,
                config.eval_before) == (True, 64, 200, True)
        props = task_type.json_schema()["properties"]
        for name in ("predict_after_training", "predict_max_new_tokens", "predict_max_rows", "eval_before"):
            assert props[name]["description"]
            assert all(props[name].get(key) for key in ("title_zh", "title_en", "help_zh", "help_en")), name
    assert "predict_max_rows" not in get("kbalign").json_schema()["properties"]  # KBAlign has its own evaluation
