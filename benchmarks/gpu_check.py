"""GPU check: the project's SFT against a plain trl script on one CUDA device, same model, data and steps.

Builds a causal LM of Qwen2.5-0.5B's shape from a config (random weights, a BPE tokenizer trained on the spot: no
model hub), writes chat rows of a few hundred tokens, then runs
  1. the project's trainer, `python -m trainers.sft` (full fine-tuning, precision bf16 with float32 master weights,
     packing, liger kernels when the package is installed), and
  2. a plain trl script: the model loaded in bfloat16, SFTTrainer with bf16, the same packing / liger / batch /
     max_length / steps,
each in its own process (clean memory peaks), and prints tokens/s, peak memory and MFU for both.

    .venv/bin/python benchmarks/gpu_check.py                # one CUDA device; under 5 minutes on an H100/H200
    .venv/bin/python benchmarks/gpu_check.py --tiny --allow-cpu   # a tiny model on the CPU: checks the plumbing only

Without a CUDA device (and without --allow-cpu) it prints why and exits 0: skipped, not failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Qwen2.5-0.5B's shape (its config.json), built with random weights.
QWEN_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
                tie_word_embeddings=True, rms_norm_eps=1e-6)
TINY = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)

# Dense bf16 peak of common training GPUs, in TFLOP/s (vendor figures, without sparsity); --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0,
                    "L40": 181.0, "A10G": 70.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0, "A6000": 155.0}

WORDS = [a + b for a in ("ka", "lo", "mi", "ne", "tu", "ra", "si", "po", "de", "ga") for b in ("n", "r", "s", "t", "")]


def build_model(out: Path, shape: dict) -> Path:
    """A BPE tokenizer (the default chat template the trainers use) and a Qwen2 causal LM of `shape`, float32."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from trainers.common.model_loading import DEFAULT_CHAT_TEMPLATE

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(2000)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=min(4096, shape["vocab_size"]), special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = Qwen2Config(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def write_rows(path: Path, n: int, words: int) -> Path:
    """Chat rows: a question and an answer of `words` pseudo-words each side (a few hundred tokens a row)."""
    rng = random.Random(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(n):
            question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 4, words // 2)))
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words)))
            f.write(json.dumps({"messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return path


def flops_per_token(shape: dict, seq_len: int) -> float:
    """Training FLOPs per token (PaLM's appendix B): 6 x the matmul parameters (the lm_head included, the embedding
    lookup not) + 12 x layers x hidden x sequence length for attention."""
    h, layers, inter = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q, o; k, v; gate, up, down
    matmul_params = layers * per_layer + shape["vocab_size"] * h
    return 6 * matmul_params + 12 * layers * h * seq_len


def throughput(points: list[tuple[float, float]], skip: int) -> float | None:
    """Tokens/s between the `skip`-th logged step and the last (the first steps pay for warm-up and compilation);
    points: (time, cumulative tokens) per logged step."""
    if len(points) <= skip + 1:
        return None
    (t0, n0), (t1, n1) = points[skip], points[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else None


def run_project(workspace: Path, model: Path, data: Path, opts: argparse.Namespace, liger: bool) -> dict:
    config = {"model_name_or_path": str(model), "train_data_path": str(data), "output_dir": "output/project",
              "use_lora": False, "precision": "bf16" if not opts.fp32 else "fp32", "packing": True,
              "use_liger_kernel": liger, "max_length": opts.max_length, "per_device_train_batch_size": opts.batch,
              "max_steps": opts.steps, "logging_steps": 1, "learning_rate": 2e-5, "eval_ratio": 0.0,
              "save_steps": opts.steps * 10}
    (workspace / "project.json").write_text(json.dumps(config))
    metrics = workspace / "project-metrics.jsonl"
    env = {**os.environ, "BUGAGARIC_WORKSPACE": str(workspace), "BUGAGARIC_METRICS_FILE": str(metrics),
           "BUGAGARIC_MODEL_ROOTS": str(model.parent), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "trainers.sft", "--config", str(workspace / "project.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=opts.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"the project's SFT failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step" and "num_tokens" in e]
    summary = json.loads((workspace / "output/project/training_summary.json").read_text())
    return {"points": [(e["time"], e["num_tokens"]) for e in steps], "peak_gb": summary.get("peak_gpu_memory_gb"),
            "first_loss": summary.get("first_loss"), "final_loss": summary.get("final_loss"),
            "wall_s": round(time.monotonic() - started, 1)}


def plain_trl(model_dir: str, data: str, out: str, opts_json: str) -> None:
    """The plain trl script (run in its own process by `run_plain`): what a user would write from trl's docs."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    opts = json.loads(opts_json)
    points: list[tuple[float, float]] = []
    losses: list[float] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                points.append((time.time(), logs["num_tokens"]))
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    dtype = torch.float32 if opts["fp32"] else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = SFTConfig(output_dir=out, bf16=not opts["fp32"] and torch.cuda.is_available(), packing=True,
                     use_liger_kernel=opts["liger"], max_length=opts["max_length"],
                     per_device_train_batch_size=opts["batch"], max_steps=opts["steps"], logging_steps=1,
                     learning_rate=2e-5, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available())
    trainer = SFTTrainer(model=model, args=args, train_dataset=load_dataset("json", data_files=data, split="train"),
                         processing_class=tokenizer, callbacks=[Record()])
    trainer.train()
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None
    print("RESULT " + json.dumps({"points": points, "peak_gb": peak, "first_loss": losses[0] if losses else None,
                                  "final_loss": losses[-1] if losses else None}), flush=True)


def run_plain(workspace: Path, model: Path, data: Path, opts: argparse.Namespace, liger: bool) -> dict:
    settings = json.dumps({"fp32": opts.fp32, "liger": liger, "max_length": opts.max_length, "batch": opts.batch,
                           "steps": opts.steps})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--plain-run", str(model), str(data),
                           str(workspace / "output/plain"), settings], cwd=ROOT, capture_output=True, text=True,
                          timeout=opts.timeout, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                     "TOKENIZERS_PARALLELISM": "false"})
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not result:
        raise SystemExit(f"the plain trl script failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(result[-1][len("RESULT "):]), "wall_s": round(time.monotonic() - started, 1)}


def peak_tflops(opts: argparse.Namespace) -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", opts.peak_tflops
    name = torch.cuda.get_device_name(0)
    if opts.peak_tflops:
        return name, opts.peak_tflops
    return name, next((tf for key, tf in PEAK_BF16_TFLOPS.items() if key in name), None)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--plain-run":
        plain_trl(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4, help="per-device batch (packed sequences)")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--skip", type=int, default=5, help="logged steps left out of tokens/s (warm-up)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of the Qwen2.5-0.5B shape")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (plumbing check, fp32)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per run")
    opts = parser.parse_args()

    import torch

    if not torch.cuda.is_available() and not opts.allow_cpu:
        print("gpu_check: skipped: no CUDA device here (use --tiny --allow-cpu to check the script itself)")
        return 0
    opts.fp32 = not torch.cuda.is_available()
    if opts.tiny:
        opts.steps, opts.batch, opts.max_length, opts.rows, opts.skip = min(opts.steps, 8), 2, 256, 64, 2
    shape = TINY if opts.tiny else QWEN_05B
    liger = torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None
    device, peak = peak_tflops(opts)
    with tempfile.TemporaryDirectory(prefix="bugagaric-gpu-check-") as scratch:
        workspace = Path(scratch)
        t = time.monotonic()
        model = build_model(workspace / "models" / "qwen-shaped", shape)
        data = write_rows(workspace / "data" / "chat.jsonl", opts.rows, words=120 if opts.tiny else 400)
        print(f"device: {device}; model: Qwen2 {'tiny' if opts.tiny else '0.5B-shaped'} built in "
              f"{time.monotonic() - t:.0f}s; liger: {'on' if liger else 'off (not installed or no CUDA)'}; "
              f"{opts.steps} steps x batch {opts.batch} x max_length {opts.max_length}, packing", flush=True)
        fpt = flops_per_token(shape, opts.max_length)
        rows = []
        for name, run in (("project sft", run_project), ("plain trl", run_plain)):
            result = run(workspace, model, data, opts, liger)
            tps = throughput([tuple(p) for p in result["points"]], opts.skip)
            mfu = tps * fpt / (peak * 1e12) if tps and peak else None
            rows.append((name, tps, result["peak_gb"], mfu, result["first_loss"], result["final_loss"],
                         result["wall_s"]))
    print(f"{'run':<12} {'tokens/s':>10} {'peak GiB':>9} {'MFU':>7} {'loss first→final':>18} {'wall s':>7}")
    for name, tps, peak_gb, mfu, first, final, wall in rows:
        print(f"{name:<12} {tps or float('nan'):>10.0f} {peak_gb if peak_gb is not None else float('nan'):>9.2f} "
              f"{(mfu or float('nan')) * 100:>6.1f}% {first or float('nan'):>8.3f}→{final or float('nan'):<8.3f} "
              f"{wall:>7.1f}")
    if peak is None:
        print("MFU: unknown peak for this device; pass --peak-tflops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
