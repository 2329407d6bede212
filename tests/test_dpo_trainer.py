"""The dpo task type: config and data checks through the registry, and one real `python -m trainers.dpo` run on a
tiny Llama built on the spot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.dpo_data import tiny_dpo_config, write_dpo_rows
from trainers import registry
from trainers.errors import EXIT_OK, ConfigError, DataError

GOOD = {"query": "What colour is the sky?", "retrieval_result": ["The sky is blue."],
        "chosen": {"text": "Blue."}, "rejected": {"text": "Green."}}


@pytest.fixture()
def dpo():
    return registry.get("dpo")


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def base_config(**overrides):
    return {"model_name_or_path": "tiny", "train_data_path": "data/train.jsonl", **overrides}


# --- config -----------------------------------------------------------------------------------------------------------

def test_template_schema_and_defaults(dpo):
    assert dpo.entry_module == "trainers.dpo" and dpo.preflight is not None
    assert "output_dir" not in dpo.default_config and dpo.default_config["beta"] == 0.1  # each task: its own dir
    cfg = dpo.parse_config(dpo.default_config)  # the template itself is a valid config
    assert (cfg.beta, cfg.loss_type, cfg.use_lora, cfg.max_length) == (0.1, "sigmoid", True, 1024)
    props = list(dpo.json_schema()["properties"])
    assert props[:2] == ["model_name_or_path", "train_data_path"] and "beta" in props and "lora_r" in props
    assert set(dpo.json_schema()["required"]) == {"model_name_or_path", "train_data_path"}
    # The template's example row is itself valid data.
    from trainers.dpo.spec import parse_row

    parse_row(dpo.data_example)


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"bta": 0.1}, "bta", "unknown config key"),
    ({"beta": -0.5}, "beta", "greater than 0"),
    ({"beta": 0}, "beta", "greater than 0"),
    ({"beta": "0.1"}, "beta", "valid number"),
    ({"loss_type": "kto"}, "loss_type", "loss_type"),
    ({"train_data_path": ...}, "train_data_path", "missing required config key"),
])
def test_bad_config_names_the_field(dpo, overrides, field, words):
    cfg = {k: v for k, v in base_config(**overrides).items() if v is not ...}
    with pytest.raises(ConfigError) as info:
        dpo.parse_config(cfg)
    assert info.value.field == field
    assert field in info.value.message and words in info.value.message


# --- data -------------------------------------------------------------------------------------------------------------

def test_valid_rows_are_counted(dpo, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD, "", {**GOOD, "retrieval_result": None},
                                                {**GOOD, "retrieval_result": "one passage"}])
    report = dpo.validate_data(dpo.parse_config(base_config()), tmp_path)
    assert report.rows == 3 and report.problems == []
    assert report.stats == {"pairs": 3, "rows_with_passages": 2}


@pytest.mark.parametrize(("bad_row", "field", "words"), [
    ({k: v for k, v in GOOD.items() if k != "rejected"}, "rejected", "Field required"),
    ({**GOOD, "rejected": {"text": "Blue."}}, "rejected.text", "identical"),
    ({**GOOD, "rejected": {"text": " Blue. "}}, "rejected.text", "identical"),
    ({**GOOD, "chosen": {"text": 42}}, "chosen.text", "valid string"),
    ({**GOOD, "rejected": "Green."}, "rejected", "valid dictionary"),
    ({**GOOD, "retrieval_result": 7}, "retrieval_result", "string or a list of strings, got int"),
    ({**GOOD, "retrieval_result": ["a", 2]}, "retrieval_result", "item 1 must be a string"),
    ('{"query": "q", "chosen": {"text": "a"}, ', "", "not valid JSON"),
    ("[1, 2]", "", "JSON object"),
])
def test_bad_row_is_reported_with_line_and_field(dpo, tmp_path, bad_row, field, words):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD, "", bad_row, GOOD])
    with pytest.raises(DataError) as info:
        dpo.validate_data(dpo.parse_config(base_config()), tmp_path)
    err = info.value
    assert err.field == "train_data_path"
    problem = err.problems[0]
    assert problem.line == 3 and problem.field == field and words in problem.message, problem
    assert "data/train.jsonl line 3" in err.message


def test_eval_data_is_validated_too(dpo, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD])
    write_jsonl(tmp_path / "data/eval.jsonl", [GOOD, {**GOOD, "rejected": {"text": "Blue."}}])
    cfg = dpo.parse_config(base_config(eval_data_path="data/eval.jsonl"))
    with pytest.raises(DataError) as info:
        dpo.validate_data(cfg, tmp_path)
    assert info.value.field == "eval_data_path"
    assert (info.value.problems[0].line, info.value.problems[0].field) == (2, "rejected.text")


def test_records_and_preflight_token_stats(dpo, tiny_llama_dir, tmp_path):
    from trainers.common.model_loading import load_tokenizer
    from trainers.common.prompt_fit import PromptFitter
    from trainers.dpo.data import fit_record
    from trainers.dpo.spec import parse_row

    fitted, record = fit_record(parse_row(GOOD), PromptFitter(load_tokenizer(str(tiny_llama_dir)), 128))
    assert fitted.fits and not fitted.trimmed
    assert record == {
        "prompt": [{"role": "user", "content": "Passages:\n[1] The sky is blue.\n\nQuestion: What colour is the sky?"}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}],
    }
    write_dpo_rows(tmp_path / "data/train.jsonl", 6)
    stats = dpo.preflight(dpo.parse_config(tiny_dpo_config(str(tiny_llama_dir), "data/train.jsonl", max_length=16)),
                          tmp_path)
    assert stats["tokens"]["max_length"] == 16 and stats["tokens"]["max"] > 16
    assert stats["tokens"]["truncated_rows"] == 6  # every pair is longer than 16 tokens as given
    # ... and even without passages the question + the longer answer exceed 16: every line is named.
    assert (stats["rows_trained"], stats["rows_dropped"], stats["rows_dropped_lines"]) == (0, 6, [1, 2, 3, 4, 5, 6])
    assert "6 row(s) will be skipped" in stats["warnings"][0]


# OpenAI's preference row (what /v1/files takes for a dpo job): a conversation, then one preferred and one
# non-preferred assistant answer.
OPENAI_PAIR = {"input": {"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "What colour is the sky?"}]},
               "preferred_output": [{"role": "assistant", "content": "Blue."}],
               "non_preferred_output": [{"role": "assistant", "content": "Green."}]}


def test_openai_preference_rows_are_taken_beside_the_seed_rows(dpo, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [OPENAI_PAIR, GOOD, OPENAI_PAIR])
    report = dpo.validate_data(dpo.parse_config(base_config()), tmp_path)
    assert report.rows == 3 and report.problems == []
    assert report.stats == {"pairs": 3, "rows_with_passages": 1, "chat_pairs": 2}


@pytest.mark.parametrize(("bad_row", "field", "words"), [
    ({**OPENAI_PAIR, "non_preferred_output": [{"role": "assistant", "content": " Blue. "}]},
     "non_preferred_output.0.content", "identical to preferred_output[0].content"),
    ({k: v for k, v in OPENAI_PAIR.items() if k != "input"}, "input", "Field required"),
    ({**OPENAI_PAIR, "preferred_output": [{"role": "user", "content": "Blue."}]}, "preferred_output.0.role",
     "'assistant'"),
    ({**OPENAI_PAIR, "preferred_output": []}, "preferred_output", "at least 1 item"),
    ({**OPENAI_PAIR, "input": {"messages": [{"role": "system", "content": "Be brief."}]}}, "input.messages",
     "at least one user message"),
])
def test_bad_openai_preference_row_names_line_and_field(dpo, tmp_path, bad_row, field, words):
    write_jsonl(tmp_path / "data/train.jsonl", [OPENAI_PAIR, bad_row])
    with pytest.raises(DataError) as info:
        dpo.validate_data(dpo.parse_config(base_config()), tmp_path)
    problem = info.value.problems[0]
    assert problem.line == 2 and problem.field == field and words in problem.message, problem


def test_openai_preference_record_keeps_the_conversation(tiny_llama_dir):
    from trainers.common.model_loading import load_tokenizer
    from trainers.common.prompt_fit import PromptFitter
    from trainers.dpo.data import fit_record
    from trainers.dpo.spec import parse_row

    fitted, record = fit_record(parse_row(OPENAI_PAIR), PromptFitter(load_tokenizer(str(tiny_llama_dir)), 128))
    assert fitted.fits
    assert record == {"prompt": OPENAI_PAIR["input"]["messages"],
                      "chosen": [{"role": "assistant", "content": "Blue."}],
                      "rejected": [{"role": "assistant", "content": "Green."}]}


def test_the_longer_answer_decides_what_fits(tiny_llama_dir):
    """Passages are trimmed so that the prompt fits with chosen AND with rejected, whichever is longer."""
    from trainers.common.model_loading import load_tokenizer
    from trainers.common.prompt_fit import PromptFitter
    from trainers.dpo.data import fit_record
    from trainers.dpo.spec import parse_row

    tokenizer = load_tokenizer(str(tiny_llama_dir))
    row = parse_row({**GOOD, "retrieval_result": ["The sky is blue. " * 30],
                     "rejected": {"text": "The sky is green and the grass is blue and the snow is red. " * 3}})
    fitted, record = fit_record(row, PromptFitter(tokenizer, 120))
    assert fitted.fits and fitted.trimmed and fitted.passages_cut == 1
    chosen = len(tokenizer.apply_chat_template(record["prompt"] + record["chosen"], tokenize=True, return_dict=False))
    rejected = len(tokenizer.apply_chat_template(record["prompt"] + record["rejected"], tokenize=True,
                                                 return_dict=False))
    assert chosen < rejected <= 120 and fitted.tokens == rejected


def test_lora_uses_the_adapter_free_base_as_reference(dpo, tiny_llama_dir, tmp_path):
    """With LoRA there is one copy of the weights (reference = adapter disabled); without, a separate frozen copy."""
    from trainers.common.cli import RunContext
    from trainers.dpo.train import DpoWorkflow

    write_dpo_rows(tmp_path / "data/train.jsonl", 4)
    ctx = RunContext("dpo", tmp_path, tmp_path / "output", None, None)
    lora = dpo.parse_config(tiny_dpo_config(str(tiny_llama_dir), "data/train.jsonl"))
    trainer = DpoWorkflow(lora, ctx).build().trainer
    assert trainer.ref_model is None and hasattr(trainer.model, "disable_adapter")
    assert (trainer.args.beta, trainer.args.max_length, trainer.args.loss_type) == (0.1, 128, ["sigmoid"])

    full = dpo.parse_config(tiny_dpo_config(str(tiny_llama_dir), "data/train.jsonl", use_lora=False, beta=0.3,
                                            loss_type="ipo"))
    trainer = DpoWorkflow(full, ctx).build().trainer
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    assert (trainer.args.beta, trainer.args.loss_type) == (0.3, ["ipo"])


# --- one real run -----------------------------------------------------------------------------------------------------

def test_dpo_lora_run_learns_the_preference_and_saves_an_adapter(tiny_llama_dir, tmp_path):
    write_dpo_rows(tmp_path / "data/train.jsonl", 32)
    write_dpo_rows(tmp_path / "data/heldout.jsonl", 8, colour_shift=3)  # topic-colour pairs never trained on
    metrics = tmp_path / "metrics.jsonl"
    config = tiny_dpo_config(str(tiny_llama_dir), "data/train.jsonl", eval_data_path="data/heldout.jsonl",
                             eval_steps=12)
    (tmp_path / "cfg.json").write_text(json.dumps(config), encoding="utf-8")
    env = {**os.environ, "BUGAGARIC_WORKSPACE": str(tmp_path), "BUGAGARIC_METRICS_FILE": str(metrics),
           "BUGAGARIC_TASK_ID": "dpo-1", "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "trainers.dpo", "--config", "cfg.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    wall = time.monotonic() - started
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]

    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    # After training: the held-out evaluation, then the held-out rows answered and scored against the chosen answer.
    assert events[0]["event"] == "start" and [e["event"] for e in events[-3:]] == ["end", "eval", "predict"]
    evaluations = [e for e in events if e["event"] == "step" and "eval_loss" in e]
    steps = [e for e in events if e["event"] == "step" and "loss" in e]
    total = config["max_steps"]
    assert len(steps) == total and steps[-1]["step"] == total and all(e["task_id"] == "dpo-1" for e in events)
    for key in ("loss", "learning_rate", "epoch", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                "rewards/margins"):
        assert all(isinstance(e.get(key), (int, float)) for e in steps), key
    losses = [e["loss"] for e in steps]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"tiny DPO run: {wall:.1f}s wall, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert abs(losses[0] - 0.6931) < 0.01  # log(2): policy == reference at step 1
    assert last < first - 0.2 and last < 0.4, (first, last)
    assert steps[-1]["rewards/margins"] > 0 and steps[-1]["rewards/accuracies"] >= 0.75

    out = tmp_path / "output/dpo"
    assert (out / "adapter_config.json").is_file() and (out / "tokenizer_config.json").is_file()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["task_type"] == "dpo" and summary["global_step"] == total and summary["num_rows"] == 32
    assert summary["final_loss"] < summary["first_loss"] and summary["beta"] == 0.1
    assert summary["final_reward_accuracy"] >= 0.75 and summary["final_reward_margin"] > 0
    # The preference holds on the held-out pairs, not only on the last training batch.
    held_out = summary["eval_after"]
    print(f"held-out reward accuracy {held_out['reward_accuracy']:.3f}, margin {held_out['reward_margin']:.3f}")
    assert held_out["pairs"] == 8 and held_out["reward_accuracy"] > 0.75 and held_out["reward_margin"] > 0
    assert summary["stopped_early"] is False and summary["rows_trained"] == 32
    [after] = [e for e in events if e["event"] == "eval"]
    assert after["phase"] == "after" and after["reward_accuracy"] == held_out["reward_accuracy"]
    assert [e["step"] for e in evaluations] == [12, 24]  # evaluated during training too (eval_steps)
    assert all("eval_rewards/accuracies" in e for e in evaluations)
    predicted = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predicted) == 8 and summary["predictions"]["rows"] == 8 and "before" not in summary["predictions"]
    chosen = {json.loads(line)["query"]: json.loads(line)["chosen"]["text"]
              for line in (tmp_path / "data/heldout.jsonl").read_text().splitlines()}
    assert all(row["reference"] == chosen[row["question"]] for row in predicted)
    assert events[-1]["phase"] == "after" and events[-1]["predict/rows"] == 8

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out)
    assert model.peft_config["default"].r == 8
