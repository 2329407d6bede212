"""Sharded training (`distributed`) and saving across nodes, through the HF trainer's own FSDP and DeepSpeed support.

`DistributedConfig` is the config's `distributed` option (cheap: no torch import, the control plane reads the schema).
`training_values(config)` turns it, and the run's shape (torchrun's WORLD_SIZE / LOCAL_WORLD_SIZE, the agent's
BUGAGARIC_GANG_NODES), into TrainingArguments values; `check(config)` refuses what this agent or this task cannot do,
naming `distributed.strategy`, in the dry run as well as at launch (trainers.common.training_args calls both).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from trainers.common.field_texts import texts
from trainers.errors import ConfigError

FIELD = "distributed.strategy"
# Strategies that split the parameters themselves over the ranks: no rank holds the whole model after training.
SHARDS_PARAMETERS = frozenset({"fsdp", "deepspeed_zero3"})
DEEPSPEED_MISSING = ("DeepSpeed is not installed on this agent: pip install 'bugagaric-finetune[deepspeed]' there, "
                     "or choose ddp or fsdp")


class DistributedConfig(BaseModel):
    """How the ranks of a multi-device run share the work."""

    model_config = ConfigDict(extra="forbid", strict=True)

    strategy: Literal["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"] = Field(
        default="ddp", description="ddp: every device holds the whole model (data parallel). fsdp: PyTorch FSDP "
        "shards parameters, gradients and optimizer state over the devices. deepspeed_zero2: DeepSpeed ZeRO shards "
        "gradients and optimizer state; deepspeed_zero3 also the parameters (DeepSpeed must be installed on the "
        "agent).", json_schema_extra=texts(
            "并行策略", "Strategy",
            "ddp：每个设备持有完整模型（数据并行）。fsdp：PyTorch FSDP 把参数、梯度和优化器状态分片到各设备。"
            "deepspeed_zero2：DeepSpeed ZeRO 分片梯度和优化器状态；deepspeed_zero3 还分片参数（agent 需装有 DeepSpeed）。",
            advanced=True),
    )
    cpu_offload: bool = Field(
        default=False, description="Keep the sharded state in CPU memory between uses (fsdp: parameters; "
        "DeepSpeed: optimizer state, and parameters with zero3): fits larger models, trains slower.",
        json_schema_extra=texts(
            "卸载到 CPU", "Offload to CPU",
            "在不用时把分片状态放在 CPU 内存（fsdp：参数；DeepSpeed：优化器状态，zero3 还有参数）：能训练更大的模型，"
            "但更慢。", advanced=True),
    )

    @field_validator("cpu_offload")
    @classmethod
    def _offload_needs_sharding(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("strategy", "ddp") == "ddp":
            raise PydanticCustomError("offload_needs_sharding", "cpu_offload needs a sharded strategy (fsdp, "
                                                                "deepspeed_zero2 or deepspeed_zero3), not ddp")
        return value


def strategy_of(config: Any) -> str:
    distributed = getattr(config, "distributed", None)
    return distributed.strategy if distributed is not None else "ddp"


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def check(config: Any) -> None:
    """What the strategy needs from the rest of the config and from this agent; ConfigError naming the field."""
    strategy = strategy_of(config)
    if strategy in SHARDS_PARAMETERS:
        check_sharded(config, strategy)
    if strategy.startswith("deepspeed") and not deepspeed_installed():
        raise ConfigError(FIELD, f"{FIELD}: {strategy}: {DEEPSPEED_MISSING}")
    if strategy == "fsdp":
        import torch

        if not torch.cuda.is_available():
            # accelerate runs FSDP on accelerators only: on a CPU it would silently train as plain DDP.
            raise ConfigError(FIELD, f"{FIELD}: fsdp needs CUDA devices and this agent has none (the HF trainer "
                                     "runs FSDP on GPUs only); use ddp on a CPU")


def check_sharded(config: Any, strategy: str) -> None:
    """Options that cannot work once no rank holds the whole model."""
    if getattr(config, "quantization", None):
        raise ConfigError(FIELD, f"{FIELD}: {strategy} cannot shard a quantized (QLoRA) base model here; use ddp or "
                                 "deepspeed_zero2, or leave quantization out")
    if getattr(type(config), "generates_while_training", False):
        # kbalign annotates and evaluates between rounds, each rank on its own items, with the trained model: with
        # sharded parameters every generation would be a collective the ranks reach a different number of times.
        raise ConfigError(FIELD, f"{FIELD}: {strategy} shards the parameters, but this task type generates with the "
                                 "model on each rank between rounds; use ddp or deepspeed_zero2")
    held_out = getattr(config, "eval_data_path", None) or getattr(config, "eval_ratio", 0)
    if getattr(config, "predict_after_training", False) and held_out:
        raise ConfigError(FIELD, f"{FIELD}: {strategy} shards the parameters, so the answers after training cannot "
                                 "be generated on rank 0 alone; set predict_after_training: false (the saved model "
                                 "is complete) or use ddp or deepspeed_zero2")


def multi_node() -> bool:
    """Several hosts: torchrun's world is larger than this node's share, or the agent says it placed a gang."""
    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0)
    return (local > 0 and world > local) or int(os.environ.get("BUGAGARIC_GANG_NODES", "1") or 1) > 1


def training_values(config: Any) -> dict[str, Any]:
    """TrainingArguments values for the config's strategy and the run's shape."""
    strategy = strategy_of(config)
    distributed = getattr(config, "distributed", None)
    offload = bool(distributed and distributed.cpu_offload)
    values: dict[str, Any] = {}
    if getattr(config, "use_lora", False):
        # Every trainable (adapter) weight gets a gradient each step; DDP's search for unused ones is pure cost.
        values["ddp_find_unused_parameters"] = False
    if multi_node():
        # No shared filesystem: each node's local rank 0 writes its own copy of every checkpoint, so every node can
        # resume (global rank 0 still writes the final model and the summary).
        values["save_on_each_node"] = True
    if strategy == "fsdp":
        values["fsdp"] = True
        values["fsdp_config"] = fsdp_config(offload)
    elif strategy.startswith("deepspeed"):
        values["deepspeed"] = deepspeed_config(3 if strategy == "deepspeed_zero3" else 2, offload)
    return values


def fsdp_config(offload: bool) -> dict[str, Any]:
    """FSDP2 through accelerate, one wrap per transformer block (the model's _no_split_modules). FULL_STATE_DICT: rank 0
    gathers and writes complete model and optimizer files, which a resumed run loads on rank 0 and broadcasts, so a
    checkpoint resumes whatever node the other ranks run on and with any number of them (GPUs only: `check`)."""
    return {"version": 2, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False, "cpu_offload": offload}


def deepspeed_config(stage: int, offload: bool) -> dict[str, Any]:
    """A ZeRO config whose sizes and precision the HF trainer fills in from its own arguments ("auto")."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": "auto"}
    if stage == 3:
        # save_model gathers the full weights, so the final model is a normal from_pretrained directory.
        zero.update({"stage3_gather_16bit_weights_on_model_save": True, "stage3_prefetch_bucket_size": "auto",
                     "stage3_param_persistence_threshold": "auto"})
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}


def check_extra_args(config: Any, extra: dict[str, Any]) -> None:
    """With `distributed` set, the strategy owns the sharding arguments: config_file may not set them too."""
    if getattr(config, "distributed", None) is None:
        return
    clash = sorted(set(extra) & {"fsdp", "fsdp_config", "deepspeed"})
    if clash:
        raise ConfigError("config_file", f"config_file: {', '.join(map(repr, clash))} cannot be set together with "
                                         f"distributed.strategy; leave one of them out")


def agreed(flag: bool) -> bool:
    """True on every rank when it is true on one, through one tiny all_reduce (MAX) when a process group of several
    ranks is up; the flag as given otherwise. Every rank must call it at the same point (e.g. each step's end)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return bool(flag)
    # nccl reduces CUDA tensors only; gloo (CPU runs) CPU ones.
    on_cuda = "nccl" in str(dist.get_backend()) and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_ranks_reached() -> None:
    """Returns on every rank once each has called it: a barrier made of the same tiny all_reduce as `agreed` (one
    code path for gloo and nccl). E.g. before rank 0 reports a checkpoint that every node writes a copy of."""
    agreed(True)
