"""KBAlign: knowledge-base input forms and their validation, chunking, the annotation/verification text handling,
and one real `python -m trainers.kbalign` run on the tiny Llama through every stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.kbalign_data import DOCUMENTS, LONG_DOCUMENT, tiny_kbalign_config, write_chat_rows, write_kb
from trainers import registry
from trainers.errors import EXIT_OK, ConfigError, DataError
from trainers.kbalign.kb import chunk_text
from trainers.kbalign.pairs import Pair, split_parts
from trainers.kbalign.prompts import QAFilter, judge, overlap_f1, parse_qa, parse_verdict


@pytest.fixture()
def kbalign():
    return registry.get("kbalign")


def cfg(kbalign, input_path, **overrides):
    return kbalign.parse_config({"model_name_or_path": "m", "input_path": str(input_path), "chunk_size": 120,
                                 "chunk_overlap": 20, **overrides})


# --- registry and config -------------------------------------------------------------------------------------------

def test_registered_with_the_seed_template(kbalign):
    assert kbalign.entry_module == "trainers.kbalign"
    assert kbalign.default_config == {"model_name_or_path": "microsoft/DialoGPT-medium", "input_path": "data/kb.jsonl",
                                      "gpu_vis": "0", "use_lora": True}  # no output_dir: each task gets its own
    config = kbalign.parse_config(kbalign.default_config)
    assert (config.iter_num, config.use_lora, config.require_question_mark) == (2, True, True)
    schema = kbalign.json_schema()
    assert list(schema["properties"])[:5] == ["model_name_or_path", "input_path", "output_dir", "gpu_vis", "use_lora"]
    assert set(schema["required"]) == {"model_name_or_path", "input_path"}
    for key in ("short_pairs", "long_pairs", "cluster_group_size", "max_attempts", "lora_r", "warmup_ratio"):
        assert schema["properties"][key]["description"], key


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"chunk_overlap": 120}, "chunk_overlap", "less than chunk_size (120)"),
    ({"iter_num": 0}, "iter_num", "greater than or equal to 1"),
    ({"short_pairs": 0, "long_pairs": 0}, "long_pairs", "at least 1"),
    ({"min_question_chars": 50, "max_question_chars": 10}, "max_question_chars", "min_question_chars"),
    ({"cluster_group_size": 1}, "cluster_group_size", "greater than or equal to 2"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"chunk_sise": 10}, "chunk_sise", "unknown config key"),
])
def test_bad_config_names_the_key(kbalign, tmp_path, overrides, field, words):
    with pytest.raises(ConfigError) as info:
        cfg(kbalign, tmp_path / "kb.jsonl", **overrides)
    assert info.value.field == field and words in info.value.message


def test_spec_import_stays_cheap():
    code = ("import sys; from trainers import registry; t = registry.get('kbalign'); t.json_schema(); "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'sklearn') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- input forms ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["jsonl", "json", "folder"])
def test_each_knowledge_base_form_loads_and_chunks(kbalign, tmp_path, kind):
    from trainers.kbalign.spec import load_knowledge_base

    target = {"jsonl": tmp_path / "data/kb.jsonl", "json": tmp_path / "data/kb.json", "folder": tmp_path / "kb"}[kind]
    write_kb(target, kind)
    (tmp_path / "kb").mkdir(exist_ok=True)
    (tmp_path / "kb" / "ignored.csv").write_text("a,b\n")  # not .txt/.md: not part of the knowledge base
    config = cfg(kbalign, target.relative_to(tmp_path))
    report = kbalign.validate_data(config, tmp_path)
    docs = len(DOCUMENTS) + 1
    assert report.rows == docs and report.stats["input_kind"] == kind and report.stats["documents"] == docs
    kb = load_knowledge_base(config, tmp_path)
    assert len(kb.chunks) == report.stats["chunks"] > docs  # the long document was cut
    assert all(len(c.text) <= 120 for c in kb.chunks)
    if kind == "jsonl":
        assert kb.chunks[0].id == "doc-apple" and kb.chunks[0].title == "apple"
        assert [c.id for c in kb.chunks if c.id.startswith("long")][:2] == ["long#1", "long#2"]
    if kind == "json":
        assert kb.chunks[0].id == "kb.json:1"
    if kind == "folder":  # recursive, in sorted path order
        sources = [Path(c.source).relative_to(target).as_posix() for c in kb.chunks]
        assert sources == sorted(sources) and any(s.startswith("notes/") for s in sources)
        assert sum(s.endswith(".md") for s in sources) >= 1


def test_a_single_text_file_is_one_document(kbalign, tmp_path):
    (tmp_path / "handbook.md").write_text(LONG_DOCUMENT, encoding="utf-8")
    report = kbalign.validate_data(cfg(kbalign, "handbook.md"), tmp_path)
    assert report.rows == 1 and report.stats["input_kind"] == "text_file" and report.stats["chunks"] > 1


def test_chunking_a_long_document():
    text = " ".join(f"Sentence number {i} talks about the {['apple', 'sky', 'snow'][i % 3]}." for i in range(60))
    chunks = chunk_text(text, 200, 40)
    assert len(chunks) > 5 and all(len(c) <= 200 for c in chunks)
    assert all(c.endswith(".") for c in chunks[:-1])  # cut at sentence ends
    for a, b in zip(chunks, chunks[1:]):  # neighbours overlap
        assert b.split(" ")[0] in a and b[:15] in a
    words = set(text.split())
    assert words == set(" ".join(chunks).split())  # nothing lost
    assert chunk_text("  short  ", 200, 40) == ["short"]
    assert chunk_text("x" * 450, 200, 0) == ["x" * 200, "x" * 200, "x" * 50]  # no boundary: hard cuts


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "content", "words"), [
    ("kb.jsonl", '{"text": "The sky is blue."}\n{"text": "ok"\n', "line 2: not valid JSON"),
    ("kb.jsonl", '{"text": "The sky is blue."}\n\n{"title": "no text"}\n', "line 3: text: Field required"),
    ("kb.jsonl", '{"text": "a"}\n{"text": "   "}\n', "line 2: text: Value error, text is empty"),
    ("kb.jsonl", '{"text": 5}\n', "line 1: text: Input should be a valid string"),
    ("kb.jsonl", '[1, 2]\n', "line 1: row must be a JSON object"),
    ("kb.jsonl", '{"text": "a"}\n{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", '
                 '"content": "a"}]}\n', "line 2: mixes chat rows"),
    ("kb.json", '["The sky is blue.", 7]', "row 2: row must be a JSON object"),
    ("kb.json", '["The sky is blue.", ""]', "row 2: text: String should have at least 1 character"),
    ("kb.json", '{"text": "not a list"}', "must hold a JSON list"),
    ("kb.jsonl", "", "is empty"),
])
def test_bad_inputs_name_the_file_and_line(kbalign, tmp_path, name, content, words):
    _write(tmp_path / "data" / name, content)
    with pytest.raises(DataError) as info:
        kbalign.validate_data(cfg(kbalign, f"data/{name}"), tmp_path)
    assert info.value.field == "input_path"
    assert f"data/{name}" in info.value.message and words in info.value.message, info.value.message


def test_bad_folders_and_missing_paths(kbalign, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataError, match=r"folder .*empty holds no \.txt or \.md files"):
        kbalign.validate_data(cfg(kbalign, "empty"), tmp_path)
    with pytest.raises(DataError, match=r"input_path: file not found: nowhere\.jsonl"):
        kbalign.validate_data(cfg(kbalign, "nowhere.jsonl"), tmp_path)
    _write(tmp_path / "kb/a.txt", "The sky is blue.")
    blank = _write(tmp_path / "kb/sub/b.md", "  \n")
    with pytest.raises(DataError) as info:
        kbalign.validate_data(cfg(kbalign, "kb"), tmp_path)
    assert "kb/sub/b.md is empty" in info.value.message
    blank.write_bytes(b"line one\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"b\.md line 2: not valid UTF-8"):
        kbalign.validate_data(cfg(kbalign, "kb"), tmp_path)


def test_annotated_chat_rows_are_recognised(kbalign, tmp_path):
    write_chat_rows(tmp_path / "data/annotated.jsonl", 5)
    report = kbalign.validate_data(cfg(kbalign, "data/annotated.jsonl"), tmp_path)
    assert report.stats == {"input_kind": "chat", "documents": 5, "chat_rows": 5}


def test_preflight_reports_chunk_token_lengths(kbalign, tiny_llama_dir, tmp_path):
    write_kb(tmp_path / "kb.jsonl")
    config = cfg(kbalign, "kb.jsonl", model_name_or_path=str(tiny_llama_dir), max_length=16)
    stats = kbalign.preflight(config, tmp_path)
    assert stats["chunks"] > stats["documents"] == len(DOCUMENTS) + 1
    tokens = stats["chunk_tokens"]
    assert 0 < tokens["p50"] <= tokens["max"] and tokens["max_length"] == 16 and tokens["truncated_rows"] >= 1


# --- annotation text handling --------------------------------------------------------------------------------------

def test_parse_qa():
    reply = " What colour is the sky?\nAnswer: Blue.\nQuestion: another?"
    assert parse_qa(reply) == ("What colour is the sky?", "Blue.")
    assert parse_qa("Question: Who?  Answer:  Ann ") == ("Who?", "Ann")
    assert parse_qa(" 天空是什么颜色？\n答案：蓝色。") == ("天空是什么颜色？", "蓝色。")
    assert parse_qa(" Where is it?\nsomething else") == ("Where is it?", None)  # answer asked for separately
    assert parse_qa("") == ("", None)


@pytest.mark.parametrize(("question", "answer", "reason"), [
    ("What colour is the sky?", "Blue.", None),
    ("Why?", "Because.", "question too short"),  # min_question_chars=5 below
    ("The sky is blue.", "Yes.", "question does not end with '?'"),
    ("What colour is the sky?", "", "no answer"),
    ("What colour is the sky?", "B", "answer too short"),
    ("What colour is the sky?" + "x" * 300 + "?", "Blue.", "question too long"),
])
def test_filters(question, answer, reason):
    assert QAFilter(min_question_chars=5).reject_reason(question, answer) == reason


def test_question_word_filter_and_relaxed_filters():
    strict = QAFilter(require_question_mark=False, require_question_word=True)
    assert strict.reject_reason("Which sky is blue", "This one.") is None
    assert strict.reject_reason("天空是什么颜色", "蓝色") is None
    assert strict.reject_reason("The sky is blue?", "Yes") == "question does not start with a question word"
    relaxed = QAFilter(require_question_mark=False, min_question_chars=1, min_answer_chars=1)
    assert relaxed.reject_reason("ka lo", "x") is None
    assert "require_question_mark=False" in relaxed.describe() and "min_question_chars=1" in relaxed.describe()


def test_verdicts_and_overlap_fallback():
    assert parse_verdict(" Yes, it agrees.") is True
    assert parse_verdict(" no") is False and parse_verdict(" The answer is incorrect") is False
    assert parse_verdict(" 不正确。") is False and parse_verdict(" 是的") is True
    assert parse_verdict(" ka lo mi") is None
    assert overlap_f1("The sky is blue", "the sky is blue") == 1.0
    assert overlap_f1("", "blue") == 0.0 and 0 < overlap_f1("blue sky", "the sky is blue") < 1
    assert judge(" no", "The sky is blue", "The sky is blue.", 0.5) == (False, "model", 1.0)
    assert judge(" ??", "The sky is blue", "The sky is blue.", 0.5) == (True, "overlap", 1.0)
    assert judge(" ??", "green", "The sky is blue.", 0.5)[:2] == (False, "overlap")


def test_split_parts_deals_every_grain_into_every_round():
    pairs = [Pair("short", f"s{i}", "a") for i in range(7)] + [Pair("long", f"l{i}", "a") for i in range(3)]
    parts = split_parts(pairs, 3, seed=1)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sorted(p.question for part in parts for p in part) == sorted(p.question for p in pairs)
    assert all({p.grain for p in part} == {"short", "long"} for part in parts)
    assert [len(p) for p in split_parts(pairs[:1], 2, seed=1)] == [1]


# --- in-process runs on the tiny model -----------------------------------------------------------------------------

def _context(tmp_path, config):
    from trainers.common.cli import RunContext

    return RunContext("kbalign", tmp_path, tmp_path / config.output_dir, None, None)


def test_annotated_input_skips_annotation(kbalign, tiny_llama_dir, tmp_path, monkeypatch):
    from trainers.kbalign.train import train

    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(metrics))
    write_chat_rows(tmp_path / "data/annotated.jsonl", 4)
    config = kbalign.parse_config(tiny_kbalign_config(tiny_llama_dir, "data/annotated.jsonl", max_steps=2))
    summary = train(config, _context(tmp_path, config))
    assert summary["annotation"] == {"skipped": True, "chat_rows": 4}
    stages = [e["stage"] for e in map(json.loads, metrics.read_text().splitlines()) if e["event"] == "stage"]
    assert not any(s.startswith(("annotate", "clustering")) for s in stages)
    assert {"chunking", "train_round_1", "verify_round_2", "train_round_2"} <= set(stages)
    ann = tmp_path / "output/kbalign/annotations"
    assert not (ann / "short.jsonl").exists() and (ann / "round_2_verification.jsonl").is_file()
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and summary["rounds"][1]["records"] == 4


def test_nothing_passing_the_filters_fails_clearly(kbalign, tiny_llama_dir, tmp_path, monkeypatch):
    from trainers.errors import TrainerError
    from trainers.kbalign.train import train

    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(tmp_path / "metrics.jsonl"))
    write_kb(tmp_path / "kb.jsonl", documents=DOCUMENTS[:2])
    config = kbalign.parse_config(tiny_kbalign_config(
        tiny_llama_dir, "kb.jsonl", short_pairs=2, long_pairs=0, max_attempts=1, require_question_mark=True))
    with pytest.raises(TrainerError) as info:
        train(config, _context(tmp_path, config))
    message = str(info.value)
    assert "kept no question-answer pair" in message and "all 2 generations failed the filters" in message
    assert "require_question_mark=True" in message and "max_attempts=1" in message
    rows = [json.loads(line) for line in (tmp_path / "output/kbalign/annotations/short.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and not any(r["kept"] for r in rows)


# --- the real thing ------------------------------------------------------------------------------------------------

def test_kbalign_end_to_end_subprocess(tiny_llama_dir, tmp_path):
    write_kb(tmp_path / "data/kb.jsonl")
    metrics = tmp_path / "metrics.jsonl"
    (tmp_path / "cfg.json").write_text(json.dumps(tiny_kbalign_config(tiny_llama_dir, "data/kb.jsonl")))
    env = {**os.environ, "BUGAGARIC_WORKSPACE": str(tmp_path), "BUGAGARIC_METRICS_FILE": str(metrics),
           "HF_HUB_OFFLINE": "1", "BUGAGARIC_TASK_ID": "kb-1"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "trainers.kbalign", "--config", "cfg.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - started
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]

    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert all(e["task_id"] == "kb-1" for e in events)
    stages = {}
    for e in (e for e in events if e["event"] == "stage"):
        stages.setdefault(e["stage"], []).append(e)
    assert list(stages) == ["chunking", "annotate_short", "clustering", "annotate_long", "train_round_1",
                            "verify_round_2", "train_round_2"]
    for name, seen in stages.items():
        assert seen[-1]["done"] == seen[-1]["total"] or name.startswith("annotate"), (name, seen[-1])
    assert stages["annotate_short"][-1]["done"] >= 1 and stages["annotate_long"][-1]["done"] >= 1

    # One step count over both rounds, with the round on every step.
    steps = [e for e in events if e["event"] == "step"]
    total = steps[-1]["total_steps"]
    assert [e["step"] for e in steps] == list(range(1, total + 1)) and {e["round"] for e in steps} == {1, 2}
    assert all(e["total_steps"] == total for e in steps)
    assert events[-1]["event"] == "end" and events[-1]["step"] == total
    losses = [e["loss"] for e in steps]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"tiny KBAlign run: {wall:.1f}s wall, {total} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert last < first - 0.3, losses

    out = tmp_path / "output/kbalign"
    ann = out / "annotations"
    short = [json.loads(line) for line in (ann / "short.jsonl").read_text().splitlines()]
    long = [json.loads(line) for line in (ann / "long.jsonl").read_text().splitlines()]
    assert sum(r["kept"] for r in short) >= 1 and all(len(r["chunk_ids"]) == 1 for r in short)
    assert sum(r["kept"] for r in long) >= 1 and all(len(r["chunk_ids"]) >= 2 for r in long)
    verification = [json.loads(line) for line in (ann / "round_2_verification.jsonl").read_text().splitlines()]
    assert verification and all({"draft", "verdict_source", "correct"} <= set(r) for r in verification)
    assert (ann / "train_messages.jsonl").is_file() and (ann / "groups.jsonl").is_file()

    summary = json.loads((out / "training_summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and summary["global_step"] == total
    assert summary["annotation"]["short"]["kept"] >= 1 and summary["annotation"]["long"]["kept"] >= 1
    assert summary["rounds"][1]["verification"]["checked"] == summary["rounds"][1]["pairs"]
    assert all(r["first_loss"] is not None and r["final_loss"] is not None for r in summary["rounds"])

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out)
    assert model.peft_config["default"].r == 8
