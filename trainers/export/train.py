"""The export itself: merge a LoRA adapter into its base (peft), re-save a causal LM in another dtype, or copy the
model as it is; then `export_summary.json`. Heavy imports happen inside the steps that need them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from trainers.common.cli import RunContext
from trainers.errors import TrainerError
from trainers.common.task_models import ADAPTER_CONFIG, KIND_TEXT
from trainers.export.spec import ExportConfig, Source, base_model, inspect_source
from trainers.paths import TASK_MARKER

SUMMARY_FILE = "export_summary.json"
# Weight files a re-save replaces (everything else of the source, e.g. the tokenizer, is copied).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json", ".h5", ".msgpack")


def _say(message: str) -> None:
    print(f"export: {message}", flush=True)


def train(config: ExportConfig, ctx: RunContext) -> dict[str, Any]:
    source = inspect_source(config)
    out = ctx.output_dir
    _say(f"{source.ref} holds a {KIND_TEXT[source.kind]} ({source.path})")
    base = None
    if source.kind == "lora_adapter" and config.merge_lora:
        base = base_model(config, source)
        merge_adapter(source, base, config.dtype, out, ctx.workspace)
        action, dtype = "merged", config.dtype
    elif source.kind == "causal_lm" and config.dtype != "auto":
        resave_causal_lm(source, config.dtype, out)
        action, dtype = "converted", config.dtype
    else:
        if config.dtype != "auto":
            _say(f"dtype {config.dtype} applies to causal language models only; the {KIND_TEXT[source.kind]} is "
                 "packaged as it is")
        copy_model_files(source.path, out)
        action, dtype = "copied", "auto"

    files = list_files(out)
    summary = {
        "task_type": "export",
        "action": action,
        "source": source.ref,
        "source_kind": source.kind,
        "base_model": base,
        "dtype": dtype,
        "files": files,
        "total_bytes": sum(entry["size"] for entry in files),
        "output_dir": str(out),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    _say(f"{action} {source.ref} into {out}: {len(files)} files, {_mib(summary['total_bytes'])}")
    return summary


def _torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def merge_adapter(source: Source, base: str, dtype: str, out: Path, workspace: Path) -> None:
    """Base + adapter -> one model whose config and weights know nothing of peft, with the adapter's tokenizer."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from trainers.common.model_loading import load_causal_lm, load_tokenizer, preflight

    preflight(base, workspace)  # the adapter's own base (not the config's) has not been checked yet
    # The trainer saved the tokenizer it trained with (pad token, chat template); the base's is the fallback.
    tokenizer = AutoTokenizer.from_pretrained(str(source.path)) if source.has_tokenizer else load_tokenizer(
        base, workspace)
    _say(f"loading base model {base} (dtype {dtype})")
    model, tokenizer = load_causal_lm(base, workspace, tokenizer=tokenizer, dtype=_torch_dtype(dtype))
    _say(f"merging the LoRA adapter of {source.ref} into it")
    try:
        merged = PeftModel.from_pretrained(model, str(source.path)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:  # e.g. shapes that do not fit: another base model
        raise TrainerError(f"the adapter of {source.ref} does not fit the base model {base!r}: "
                           f"{_first_line(exc)}") from exc
    _say(f"saving the merged model (safetensors) and the tokenizer to {out}")
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    _check_no_peft(out)


def _check_no_peft(out: Path) -> None:
    """The point of merging: transformers alone must load it, so nothing of peft may be left behind."""
    if (out / ADAPTER_CONFIG).exists():
        raise TrainerError(f"the merged model in {out} still has {ADAPTER_CONFIG}")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    left = sorted(key for key in config if "peft" in key.lower() or "adapter" in key.lower())
    if left:
        raise TrainerError(f"the merged model's config.json still has peft keys: {', '.join(left)}")


def resave_causal_lm(source: Source, dtype: str, out: Path) -> None:
    """A full causal LM in the asked dtype: its weights re-saved, every other file (tokenizer, ...) copied."""
    from transformers import AutoModelForCausalLM

    copy_model_files(source.path, out, skip_weights=True)
    _say(f"loading {source.ref} in {dtype}")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source.path), dtype=_torch_dtype(dtype))
    except (OSError, ValueError) as exc:
        raise TrainerError(f"the model of {source.ref} could not be loaded: {_first_line(exc)}") from exc
    _say(f"saving it (safetensors, {dtype}) to {out}")
    model.save_pretrained(str(out))


def copy_model_files(src: Path, out: Path, *, skip_weights: bool = False) -> None:
    """Copies the source's files as they are, without checkpoints, the source task's marker or symlinks (which could
    point anywhere on this host)."""
    copied, size = 0, 0
    for directory, subdirs, names in os.walk(src):
        here = Path(directory)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("checkpoint-") and not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            if name in (TASK_MARKER, SUMMARY_FILE) or path.is_symlink() or not path.is_file():
                continue
            if skip_weights and name.endswith(_WEIGHT_SUFFIXES):
                continue
            target = out / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied, size = copied + 1, size + path.stat().st_size
    _say(f"copied {copied} files ({_mib(size)}) from {src}")


def list_files(out: Path) -> list[dict[str, Any]]:
    """The exported files (relative paths and sizes), without the platform's own marker and this summary."""
    entries = []
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name not in (TASK_MARKER, SUMMARY_FILE):
            entries.append({"path": path.relative_to(out).as_posix(), "size": path.stat().st_size})
    return entries


def _mib(count: int) -> str:
    return f"{count / 1024**2:.1f} MiB"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
