"""Loads the tokenizer and causal LM from a local directory or a hub id (honouring HF_HUB_OFFLINE), with a clear
ModelNotFound when neither works. transformers is imported inside the loaders only, so `preflight` stays cheap."""

from __future__ import annotations

import os
import re
from pathlib import Path

from trainers.errors import ConfigError, ModelNotFound, TrainerError
from trainers.paths import readable, resolve

# A small ChatML-like template for tokenizers that ship none, so chat rows and prompt/completion rows work.
# It renders a prompt alone exactly as the start of prompt+completion (trl relies on that to mask the prompt).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"}
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


FIELD = "model_name_or_path"
INIT_FIELD = "init_from"


def confine_local_model(name_or_path: str, workspace: Path | None = None, field: str = FIELD) -> Path | None:
    """A model given as a path that exists must lie where tasks may read models (ConfigError naming `field`
    otherwise); returns it resolved, or None when there is no such local path (then it is a hub id, or missing)."""
    local = resolve(name_or_path, workspace)
    if not os.path.lexists(local):
        return None
    return readable(name_or_path, field, workspace, kind="model")


def locate_model(name_or_path: str, workspace: Path | None = None, field: str = FIELD) -> str:
    """Returns what to pass to from_pretrained: an absolute local directory, or the hub id unchanged."""
    local = confine_local_model(name_or_path, workspace, field) or resolve(name_or_path, workspace)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFound(f"model {name_or_path!r} not found: {local} exists but is not a model directory "
                                "(no config.json)")
        return str(local)
    looks_local = Path(name_or_path).expanduser().is_absolute() or name_or_path.startswith((".", "~"))
    if looks_local or not _HUB_ID.match(name_or_path):
        raise ModelNotFound(f"model {name_or_path!r} not found: no local directory {str(local)!r}")
    return name_or_path


def preflight(name_or_path: str, workspace: Path | None = None, field: str = FIELD) -> str:
    """Cheap check (no torch) run before the heavy imports: fails fast on a missing local directory, or on a hub id
    that is not in the local cache while the hub is off (HF_HUB_OFFLINE). Returns where the model loads from."""
    source = locate_model(name_or_path, workspace, field)
    if os.path.isabs(source) or not hub_offline():
        return source
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(source, "config.json"), str):
        raise load_failure(name_or_path, source, FileNotFoundError("not in the local cache"))
    return source


def locate_named_model(name_or_path: str, field: str, workspace: Path | None = None) -> str:
    """`preflight` for a model named by another config key (KBAlign's embedding model, GISTEmbed's guide): every
    error names that key."""
    try:
        return preflight(name_or_path, workspace, field)
    except ModelNotFound as exc:
        raise ModelNotFound(f"{field}: {exc}") from None


def load_failure(name: str, source: str, exc: Exception) -> TrainerError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if os.path.isabs(source):  # a local model directory that exists but does not load
        return TrainerError(f"model {name!r} at {source} could not be loaded: {reason}")
    if hub_offline():
        return ModelNotFound(f"model {name!r} not found: no local directory {name!r} and the model hub is "
                             "unreachable (HF_HUB_OFFLINE=1)")
    return ModelNotFound(f"model {name!r} not found: no local directory {name!r} and it could not be loaded from "
                         f"the model hub ({reason})")


def load_tokenizer(name_or_path: str, workspace: Path | None = None):
    from transformers import AutoTokenizer

    source = locate_model(name_or_path, workspace)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise load_failure(name_or_path, source, exc) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # the usual causal-LM choice; padding is masked anyway
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def load_causal_lm(name_or_path: str, workspace: Path | None = None, tokenizer=None, *, weights: str | None = None,
                   **kwargs):
    """Returns (model, tokenizer). Weights load in float32; mixed precision is the trainer's job. `weights`: a
    directory the platform fetched (a finished task's full model, see `starting_point`) whose weights load instead of
    name_or_path's; the tokenizer stays name_or_path's."""
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or load_tokenizer(name_or_path, workspace)
    source = weights or locate_model(name_or_path, workspace)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise load_failure(name_or_path, source, exc) from exc
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))  # a pad token was added above
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_model_to_train(config, args, workspace: Path | None = None, tokenizer=None):
    """(model, tokenizer) as a trainer should get them under `args` (the built training arguments):

    - full fine-tuning: float32 weights whatever the precision; bf16/fp16 only run the matrix products (autocast),
      so the optimizer updates float32 master weights (half-precision weights would lose small updates, and fp16
      gradients cannot be unscaled);
    - LoRA: the frozen base in the compute dtype (half the memory), the adapter float32 (peft's default);
    - QLoRA (`quantization`): the frozen base quantized by bitsandbytes on this process's GPU, made ready for k-bit
      training (peft), compute dtype as above.
    """
    import torch

    from trainers.common.training_args import compute_dtype

    dtype = compute_dtype(args) if config.use_lora else torch.float32
    kwargs = {"dtype": dtype}
    quantization = getattr(config, "quantization", None)
    if quantization:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization == "4bit", load_in_8bit=quantization == "8bit",
            bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    start = starting_point(config)
    model, tokenizer = load_causal_lm(config.model_name_or_path, workspace, tokenizer=tokenizer,
                                      weights=starting_weights(config, start), **kwargs)
    if quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    if start is not None and start.kind == "lora_adapter":
        from peft import PeftModel

        # The finished task's adapter keeps training (the trainers then add no new one: see Workflow.peft_config).
        model = PeftModel.from_pretrained(model, str(start.path), is_trainable=True)
    return model, tokenizer


def starting_point(config):
    """The finished task a config continues (`init_from`: its fetched model, a task_models.Source), checked to be a
    causal LM or a LoRA adapter the config can train on; None without init_from. ConfigError names init_from."""
    from trainers.common.task_models import KIND_TEXT, inspect_task_model

    ref = getattr(config, INIT_FIELD, None)
    if not ref:
        return None
    source = inspect_task_model(ref, INIT_FIELD)
    if source.kind == "lora_adapter" and not config.use_lora:
        raise ConfigError(INIT_FIELD, f"{INIT_FIELD}: {ref} trained a LoRA adapter; set use_lora: true to keep "
                                      "training it (or export it merged and train on the export)")
    if source.kind not in ("lora_adapter", "causal_lm"):
        raise ConfigError(INIT_FIELD, f"{INIT_FIELD}: {ref} holds a {KIND_TEXT[source.kind]}, not a causal language "
                                      "model or a LoRA adapter of one")
    return source


def starting_weights(config, start=None) -> str | None:
    """The directory of the full weights a config continues from (init_from naming a full model), else None."""
    start = start if start is not None else starting_point(config)
    return str(start.path) if start is not None and start.kind == "causal_lm" else None
