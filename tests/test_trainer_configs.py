"""Task configs and data files are checked through the registry, in-process and without torch: each error names
the config key, or the file and line, that is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers import registry
from trainers.errors import ConfigError, DataError, UnknownTaskType

GOOD_ROW = {"query": "What colour is the sky?", "retrieval_result": "The sky is blue.",
            "chosen": {"text": "Blue."}, "rejected": {"text": "Green."}}


@pytest.fixture()
def sft():
    return registry.get("sft")


def config(**overrides):
    base = {"model_name_or_path": "tiny", "train_data_path": "data/train.jsonl"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --- registry and config -------------------------------------------------------------------------------------------

def test_registry_is_cheap_and_has_sft_template(sft):
    assert sft.entry_module == "trainers.sft"
    assert sft.default_config["model_name_or_path"] == "microsoft/DialoGPT-medium"
    sft.parse_config(sft.default_config)  # the template itself is a valid config
    schema = sft.json_schema()
    assert list(schema["properties"])[:2] == ["model_name_or_path", "train_data_path"]
    assert schema["properties"]["learning_rate"]["description"]
    assert set(schema["required"]) == {"model_name_or_path", "train_data_path"}


def test_schema_path_does_not_import_the_training_stack():
    code = ("import sys; from trainers import registry; t = registry.get('sft'); t.json_schema(); "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_defaults_fill_in(sft):
    cfg = sft.parse_config(config())
    assert (cfg.use_lora, cfg.learning_rate, cfg.num_train_epochs, cfg.per_device_train_batch_size) == (True, 5e-5, 3, 4)
    assert cfg.output_dir is None and cfg.max_steps == -1
    assert sft.parse_config(config(learning_rate=1)).learning_rate == 1.0  # an int is fine for a float


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"learnig_rate": 1e-4}, "learnig_rate", "unknown config key"),
        ({"model_name_or_path": ...}, "model_name_or_path", "missing required config key"),
        ({"learning_rate": -1e-4}, "learning_rate", "greater than 0"),
        ({"num_train_epochs": "3"}, "num_train_epochs", "valid number"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size", "greater than or equal to 1"),
        ({"use_lora": "yes"}, "use_lora", "valid boolean"),
        ({"lora_dropout": 1.5}, "lora_dropout", "less than or equal to 1"),
    ],
)
def test_bad_config_names_the_field(sft, overrides, field, words):
    with pytest.raises(ConfigError) as info:
        sft.parse_config(config(**overrides))
    assert info.value.field == field
    assert field in info.value.message and words in info.value.message


def test_config_as_json_text(sft):
    assert sft.parse_config(json.dumps(config())).model_name_or_path == "tiny"
    with pytest.raises(ConfigError) as info:
        sft.parse_config(json.dumps(config(num_train_epochs="3")))
    assert info.value.field == "num_train_epochs"


def test_unknown_type():
    with pytest.raises(UnknownTaskType) as info:
        registry.get("rlhf")
    assert info.value.field == "type" and "sft" in info.value.message


# --- data -----------------------------------------------------------------------------------------------------------

def test_valid_rows_are_counted(sft, tmp_path):
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello."}]}
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW, "", chat, {**GOOD_ROW, "retrieval_result": ["a", "b"]},
                                                {"query": "q", "chosen": {"text": "a"}}])
    report = sft.validate_data(sft.parse_config(config()), tmp_path)
    assert report.rows == 4 and report.problems == []
    assert report.path == str((tmp_path / "data/train.jsonl").resolve())
    assert report.stats == {"rag_rows": 3, "chat_rows": 1}


def test_missing_file(sft, tmp_path):
    with pytest.raises(DataError) as info:
        sft.validate_data(sft.parse_config(config()), tmp_path)
    assert info.value.field == "train_data_path"
    assert "file not found: data/train.jsonl" in info.value.message


def test_empty_file(sft, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", ["", "  "])
    with pytest.raises(DataError, match="empty"):
        sft.validate_data(sft.parse_config(config()), tmp_path)


def test_bad_json_names_file_and_line(sft, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW] * 6 + ["{not json"] + [GOOD_ROW])
    with pytest.raises(DataError) as info:
        sft.validate_data(sft.parse_config(config()), tmp_path)
    err = info.value
    assert err.field == "train_data_path"
    assert "data/train.jsonl line 7" in err.message and "not valid JSON" in err.message
    assert [p.line for p in err.problems] == [7]


def test_row_problems_name_line_and_field(sft, tmp_path):
    rows = [GOOD_ROW, GOOD_ROW, GOOD_ROW, {"query": "q", "chosen": {}},
            {**GOOD_ROW, "retrieval_result": 42}, {"messages": [{"role": "user", "content": "hi"}]}, [1, 2]]
    write_jsonl(tmp_path / "data/train.jsonl", rows)
    with pytest.raises(DataError) as info:
        sft.validate_data(sft.parse_config(config()), tmp_path)
    err = info.value
    assert "line 4: chosen.text: Field required" in err.message and "4 bad lines" in err.message
    by_line = {p.line: p for p in err.problems}
    assert str(by_line[4]) == "line 4: chosen.text: Field required"
    assert by_line[5].field.startswith("retrieval_result")
    assert "assistant" in by_line[6].message
    assert "JSON object" in by_line[7].message


def test_problems_are_capped_at_20(sft, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", ["nope"] * 30)
    with pytest.raises(DataError) as info:
        sft.validate_data(sft.parse_config(config()), tmp_path)
    assert len(info.value.problems) == 20 and "30 bad lines" in info.value.message


def test_json_list_file_numbers_rows(sft, tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps([GOOD_ROW, {"query": "q"}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"row 2: chosen: Field required"):
        sft.validate_data(sft.parse_config(config(train_data_path="rows.json")), tmp_path)
    (tmp_path / "rows.json").write_text(json.dumps([GOOD_ROW]), encoding="utf-8")
    assert sft.validate_data(sft.parse_config(config(train_data_path="rows.json")), tmp_path).rows == 1


def test_config_file_must_exist_and_be_a_mapping(sft, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW])
    with pytest.raises(ConfigError) as info:
        sft.validate_data(sft.parse_config(config(config_file="extra.yaml")), tmp_path)
    assert info.value.field == "config_file" and "not found" in info.value.message
    (tmp_path / "extra.yaml").write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        sft.validate_data(sft.parse_config(config(config_file="extra.yaml")), tmp_path)
    (tmp_path / "extra.yaml").write_text("weight_decay: 0.1\n", encoding="utf-8")
    assert sft.validate_data(sft.parse_config(config(config_file="extra.yaml")), tmp_path).rows == 1


# --- prompt and record shape ----------------------------------------------------------------------------------------

def test_rag_prompt_and_chat_rows():
    from trainers.common.rag_prompt import build_rag_prompt
    from trainers.sft.data import split_chat
    from trainers.sft.spec import parse_row

    assert build_rag_prompt("Q?") == "Q?"
    assert build_rag_prompt("Q?", ["p one", "p two"]) == "Passages:\n[1] p one\n[2] p two\n\nQuestion: Q?"
    assert build_rag_prompt("Q?", "only") == "Passages:\n[1] only\n\nQuestion: Q?"
    chat = parse_row({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                   {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]})
    prompt, completion = split_chat(chat)
    assert [m["content"] for m in prompt] == ["a", "b", "c"] and completion == [{"role": "assistant", "content": "d"}]


def test_metrics_emitter_appends_json_lines(tmp_path, capsys):
    from trainers.common.metrics import MetricsEmitter

    path = tmp_path / "m" / "metrics.jsonl"
    emitter = MetricsEmitter(path, task_id="t1")
    emitter.step(step=3, total_steps=12, loss=2.10344, learning_rate=4.2e-5, eta_seconds=12.2)
    emitter.end(step=12, total_steps=12, final_loss=float("nan"))
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["step", "end"]
    assert events[0]["task_id"] == "t1" and events[0]["loss"] == 2.10344 and events[1]["final_loss"] is None
    assert "step 3/12 loss=2.1034 lr=4.2e-05 eta=12s" in capsys.readouterr().out
