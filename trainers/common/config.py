"""The pydantic base every task config builds on, and the options shared by the language-model types.

Strict on purpose: a typo'd key, a missing key, "3" for a number or an out-of-range value is rejected with the
key's name before any GPU time is spent. The field descriptions are what the console form and templates show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from trainers.common.distributed import DistributedConfig
from trainers.common.field_texts import texts, with_english_help
from trainers.common.task_models import TASK_REF
from trainers.errors import ConfigError
from trainers.paths import policy, readable_file, shown


# The experiment trackers a trainer may also report to (the HF trainers' own integrations; each needs its package on
# the agent: `pip install 'bugagaric-finetune[tracking]'`). Their files land in the task's output directory, among its
# artifacts (tensorboard: runs/; mlflow without MLFLOW_TRACKING_URI: mlruns/).
TRACKERS = ("tensorboard", "mlflow")
ReportTo = Annotated[
    list[Literal["tensorboard", "mlflow"]],
    Field(
        default_factory=list, max_length=len(TRACKERS),
        description="Experiment trackers to report to as well: tensorboard (event files under runs/ among the "
        "task's artifacts) and/or mlflow (MLFLOW_TRACKING_URI on the agent, else mlruns/ among the artifacts). The "
        "agent needs their packages (the `tracking` extra).",
        json_schema_extra=texts(
            "实验跟踪", "Report to",
            "同时上报到这些实验跟踪工具：tensorboard（事件文件在产物的 runs/ 下）和/或 mlflow（agent 上的 "
            "MLFLOW_TRACKING_URI，未设置时在产物的 mlruns/ 下）。agent 需装有对应的包（tracking 扩展）。",
            advanced=True),
    ),
]


class TaskConfig(BaseModel):
    """Base of every task config: unknown keys and loose types are errors (strict still takes an int for a float)."""

    # allow_inf_nan=False: JSON's Infinity/NaN would only fail later, at launch.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # Keys listed here come first in the JSON schema (the console form's order); the rest follow.
    schema_order: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema = super().model_json_schema(*args, **kwargs)
        props = schema.get("properties", {})
        order = [k for k in cls.schema_order if k in props] + [k for k in props if k not in cls.schema_order]
        schema["properties"] = {k: props[k] for k in order}
        with_english_help(schema["properties"])
        return schema

    # Devices, for every type. The agent turns them into CUDA_VISIBLE_DEVICES for the trainer.
    gpu_vis: str | None = Field(
        default=None,
        pattern=r"^\s*\d+(\s*,\s*\d+)*\s*$",
        description='Pin the task to these GPU indices, e.g. "0,1" (the seed\'s key). Overrides `gpus`.',
        json_schema_extra=texts(
            "指定 GPU", "Pin GPUs",
            "把任务固定在这些 GPU 编号上，如 \"0,1\"（种子文档的键），优先于 gpus。留空：由平台分配空闲"
            "设备。", advanced=True),
    )
    gpus: int | None = Field(
        default=None, ge=1, description="How many devices the task needs (default 1); more than one trains "
        "data-parallel (torchrun).", json_schema_extra=texts(
            "GPU 数量", "GPU count",
            "任务需要的设备数（默认 1）；多于 1 时用 torchrun 数据并行训练。", advanced=True),
    )
    # Several hosts (a gang): the scheduler places every node at once or none; torchrun's c10d rendezvous joins them.
    nodes: int | None = Field(
        default=None, ge=1, le=64, description="How many hosts (agents) train together (default 1). Every node gets "
        "gpus_per_node devices; all are placed at once or the task waits.", json_schema_extra=texts(
            "节点数", "Nodes",
            "一起训练的主机（agent）数量（默认 1）。每个节点分配 gpus_per_node 个设备；全部同时就位，否则任务等待。",
            advanced=True),
    )
    gpus_per_node: int | None = Field(
        default=None, ge=1, description="Devices on each node of a multi-node task (default 1).",
        json_schema_extra=texts("每节点 GPU 数", "GPUs per node", "多节点任务每个节点上的设备数（默认 1）。",
                                advanced=True),
    )
    split_gpus: bool = Field(
        default=False, description="Let the scheduler split `gpus` over several agents (equal shares, the fewest "
        "nodes that fit) when no single agent has that many free.", json_schema_extra=texts(
            "允许跨节点拆分", "Split across agents",
            "当没有单个 agent 有足够的空闲设备时，允许调度器把 gpus 平均拆分到多个 agent（节点数尽量少）。",
            advanced=True),
    )
    # Scheduling, for every type (the trainer ignores them).
    priority: int = Field(
        default=0, ge=-100, le=100, description="Queue priority: higher runs first, then older first.",
        json_schema_extra=texts(
            "队列优先级", "Queue priority",
            "数值越大越先运行；优先级相同时先提交的先运行。", advanced=True),
    )
    max_retries: int = Field(
        default=0, ge=0, le=10, description="Requeues allowed when the task's agent is lost (it resumes from its "
        "latest checkpoint; set save_steps).", json_schema_extra=texts(
            "最大重试次数", "Max retries",
            "任务所在的 agent 失联时允许重新排队的次数（从最近的检查点续训，需设置 save_steps）。", advanced=True),
    )

    @field_validator("nodes")
    @classmethod
    def _nodes_not_pinned(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and value > 1 and info.data.get("gpu_vis"):
            raise PydanticCustomError("gang_pinned", "a multi-node task cannot pin device indices (gpu_vis names "
                                                     "devices of one agent): leave gpu_vis out")
        return value

    @field_validator("gpus_per_node")
    @classmethod
    def _gpus_agree(cls, value: int | None, info: ValidationInfo) -> int | None:
        gpus, nodes = info.data.get("gpus"), info.data.get("nodes") or 1
        if value is not None and gpus is not None and gpus != nodes * value:
            raise PydanticCustomError("gpus_disagree", "gpus ({gpus}) must equal nodes × gpus_per_node "
                                      "({nodes} × {value}); set one of them",
                                      {"gpus": gpus, "nodes": nodes, "value": value})
        return value

    @field_validator("split_gpus")
    @classmethod
    def _split_alone(cls, value: bool, info: ValidationInfo) -> bool:
        if value and (info.data.get("nodes") or info.data.get("gpus_per_node") or info.data.get("gpu_vis")):
            raise PydanticCustomError("split_conflict", "split_gpus lets the scheduler choose the nodes for `gpus`: "
                                                        "do not also set nodes, gpus_per_node or gpu_vis")
        return value


class LMConfig(TaskConfig):
    """Options shared by the causal-LM trainers (sft, dpo, kbalign)."""

    model_name_or_path: str = Field(
        min_length=1,
        description="Base model: a local directory (absolute, or relative to the workspace) or a model hub id.",
        json_schema_extra=texts("基座模型", "Base model", "基座模型：本地目录（绝对路径或相对工作区）或模型仓库 ID。"),
    )
    output_dir: str | None = Field(
        default=None,
        description="Where the trained adapter/model is saved (relative to the workspace). "
        "Default: a directory of the task's own, <output root>/<type>/<task id>.",
        json_schema_extra=texts(
            "输出目录", "Output directory",
            "训练得到的适配器或模型的保存位置（相对工作区）。默认：任务自己的目录 <输出根目录>/<类型>/<任务 ID>。"),
    )
    config_file: str | None = Field(
        default=None,
        description="Optional YAML or JSON file of extra training arguments (HF TrainingArguments / trl config "
        "names), applied on top of these options.",
        json_schema_extra=texts(
            "额外参数文件", "Extra arguments file",
            "可选的 YAML 或 JSON 文件，写 HF TrainingArguments / trl 配置的参数名，覆盖在这些选项之上。"),
    )
    init_from: str | None = Field(
        default=None,
        description="Continue a finished task's training: task:<task id> of a succeeded task of yours. Its LoRA "
        "adapter keeps training on model_name_or_path (the adapter's own rank and targets win over lora_*), or its "
        "full weights replace model_name_or_path's. None: start from model_name_or_path.",
        json_schema_extra=texts(
            "从任务继续训练", "Continue from a task",
            "继续一个已完成任务的训练：task:<任务 ID>（你自己的成功任务）。其 LoRA 适配器在 model_name_or_path 上继续训"
            "练（以适配器自身的秩和目标模块为准），全量权重则替换 model_name_or_path。留空：从 model_name_or_path 开始"
            "。", advanced=True),
    )
    use_lora: bool = Field(default=True, description="Train a LoRA adapter instead of all weights.",
                           json_schema_extra=texts("使用 LoRA", "Use LoRA", "训练 LoRA 适配器，而不是全部权重。"))
    learning_rate: float = Field(default=5e-5, gt=0, description="Peak learning rate.",
                                 json_schema_extra=texts("学习率", "Learning rate", "峰值学习率。"))
    num_train_epochs: float = Field(default=3, gt=0, description="Passes over the training data.",
                                    json_schema_extra=texts("训练轮数", "Epochs", "遍历训练数据的次数。"))
    per_device_train_batch_size: int = Field(default=4, ge=1, description="Rows per batch on each device.",
                                             json_schema_extra=texts(
                                                 "每卡批大小", "Batch size per device",
                                                 "每个设备上一个批次的行数。"))
    max_length: int = Field(default=1024, ge=16, description="Longest tokenized sequence (prompt + answer). A longer "
                            "row has its retrieved passages trimmed to fit (see truncation).",
                            json_schema_extra=texts(
                                "最大长度", "Max length",
                                "分词后最长的序列（提示 + 回答）。更长的行会裁剪检索段落以适应（见 truncation）。"))
    max_steps: int = Field(default=-1, ge=-1, description="Stop after this many optimizer steps (-1: use epochs).",
                           json_schema_extra=texts(
                               "最大步数", "Max steps",
                               "训练到这么多优化步后停止（-1：按训练轮数）。"))
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Batches accumulated per optimizer step (effective batch = batch x this x GPUs).",
        json_schema_extra=texts(
            "梯度累积步数", "Gradient accumulation steps",
            "每个优化步累积的批次数（有效批大小 = 批大小 × 此值 × GPU 数）。", advanced=True),
    )
    warmup_ratio: float = Field(
        default=0.0, ge=0, lt=1, description="Fraction of the steps spent warming the learning rate up from 0.",
        json_schema_extra=texts("预热比例", "Warm-up ratio", "学习率从 0 开始预热所占的步数比例。", advanced=True),
    )
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = Field(default="linear", description="Learning-rate schedule after warm-up.", json_schema_extra=texts(
        "学习率调度", "Learning-rate schedule",
        "预热之后学习率的变化方式。", advanced=True))
    logging_steps: int = Field(default=1, ge=1, description="Emit loss/progress metrics every N steps.",
                               json_schema_extra=texts(
                                   "日志间隔步数", "Logging steps",
                                   "每隔 N 步上报一次损失和进度。", advanced=True))
    report_to: ReportTo
    save_steps: int | None = Field(
        default=None, ge=1, description="Save a checkpoint every N steps (none: only the final model).",
        json_schema_extra=texts(
            "检查点间隔步数", "Checkpoint every N steps",
            "每隔 N 步保存一个检查点（留空：只保存最终模型）。", advanced=True),
    )
    eval_data_path: str | None = Field(
        default=None, description="Evaluation data in the training format (relative to the workspace).",
        json_schema_extra=texts("验证数据", "Evaluation data", "训练格式的验证数据（相对工作区）。", advanced=True),
    )
    eval_ratio: float = Field(
        default=0.0, ge=0, lt=1, description="Hold this fraction of the training rows out for evaluation "
        "(ignored when eval_data_path is given).", json_schema_extra=texts(
            "验证集比例", "Held-out ratio",
            "从训练数据中留出这一比例用于验证（给了 eval_data_path 时忽略）。", advanced=True),
    )
    eval_steps: int | None = Field(
        default=None, ge=1, description="Evaluate every N steps (none: once per epoch).",
        json_schema_extra=texts(
            "验证间隔步数", "Evaluate every N steps",
            "每隔 N 步验证一次（留空：每轮一次）。", advanced=True),
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Trade compute for memory on large models (activations are recomputed in the "
        "backward pass).", json_schema_extra=texts(
            "梯度检查点", "Gradient checkpointing",
            "用计算换显存：反向传播时重新计算激活值，适合大模型。", advanced=True),
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Mixed precision: the weights being trained stay float32 and the matrix "
        "products run in half precision. auto = bf16 on GPUs that support it, else fp16; fp32 on a CPU (bf16 given "
        "explicitly runs as CPU autocast).", json_schema_extra=texts(
            "计算精度", "Precision",
            "混合精度：训练中的权重保持 float32，矩阵乘法用半精度。auto = 支持的 GPU 上用 bf16，否则 fp16；CPU 上为 "
            "fp32（显式指定 bf16 时在 CPU 上自动混合精度运行）。", advanced=True),
    )
    use_liger_kernel: bool = Field(
        default=False, description="Use Liger's fused Triton kernels (less memory, faster). Needs a CUDA device "
        "and the liger-kernel package on the agent.", json_schema_extra=texts(
            "Liger 融合内核", "Liger kernel",
            "使用 Liger 的融合 Triton 内核（省显存、更快）。需要 CUDA 设备，且 agent 装有 liger-kernel"
            "。", advanced=True),
    )
    quantization: Literal["4bit", "8bit"] | None = Field(
        default=None, description="QLoRA: load the frozen base model in 4-bit (NF4) or 8-bit through "
        "bitsandbytes and train a LoRA adapter on top. Needs use_lora, a CUDA device and bitsandbytes on the "
        "agent.", json_schema_extra=texts(
            "量化（QLoRA）", "Quantization (QLoRA)",
            "QLoRA：通过 bitsandbytes 以 4 位（NF4）或 8 位加载冻结的基座模型，并在其上训练 LoRA 适配器。需要 use_lora"
            "、CUDA 设备和 agent 上的 bitsandbytes。", advanced=True),
    )
    save_total_limit: int | None = Field(
        default=3, ge=1, description="Keep at most this many checkpoints; older ones are deleted (none: keep all).",
        json_schema_extra=texts(
            "最多保留检查点", "Checkpoints kept",
            "最多保留这么多检查点，更旧的会被删除（留空：全部保留）。", advanced=True),
    )
    truncation: Literal["passages", "error"] = Field(
        default="passages", description="Rows longer than max_length: passages = the retrieved passages are "
        "trimmed or dropped until the row fits (never the question or the answer); a row that still does not fit "
        "is skipped and reported by line. error = such a row fails the task instead of being skipped.",
        json_schema_extra=texts(
            "超长行处理", "Over-long rows",
            "超过 max_length 的行：passages = 裁剪或丢弃检索段落直到放得下（从不动问题和回答），仍放不下的行跳过并按行"
            "号报告；error = 这样的行让任务失败。", advanced=True),
    )
    seed: int = Field(default=42, description="Random seed for reproducible runs.", json_schema_extra=texts(
        "随机种子", "Random seed",
        "随机种子，用于可复现的训练。", advanced=True))
    lora_r: int = Field(default=8, ge=1, description="LoRA rank.", json_schema_extra=texts(
        "LoRA 秩", "LoRA rank",
        "LoRA 的秩 r。", advanced=True))
    lora_alpha: int = Field(default=16, ge=1, description="LoRA scaling alpha.", json_schema_extra=texts(
        "LoRA 缩放系数", "LoRA alpha",
        "LoRA 的缩放系数 alpha。", advanced=True))
    lora_dropout: float = Field(default=0.05, ge=0, le=1, description="Dropout on the LoRA layers.",
                                json_schema_extra=texts(
                                    "LoRA 丢弃率", "LoRA dropout",
                                    "LoRA 层上的 dropout 比例。", advanced=True))
    lora_target_modules: list[str] = Field(
        default=["all-linear"], min_length=1,
        description='Module names LoRA wraps, e.g. ["q_proj", "v_proj"]. Default ["all-linear"]: every linear '
        "layer but the output head (what QLoRA and LLaMA-Factory use).",
        json_schema_extra=texts(
            "LoRA 目标模块", "LoRA target modules",
            "LoRA 包裹的模块名，如 [\"q_proj\", \"v_proj\"]。默认 [\"all-linear\"]：除输出头之外的所有线性层（QLoRA 和 "
            "LLaMA-Factory 的做法）。", advanced=True),
    )

    distributed: DistributedConfig | None = Field(
        default=None, description='How a multi-device run shares the model, e.g. {"strategy": "fsdp"}: ddp (the '
        "default), fsdp, deepspeed_zero2 or deepspeed_zero3. Checkpoints of a sharded run resume.",
        json_schema_extra=texts(
            "分布式训练", "Sharded training",
            '多设备训练时如何分担模型，如 {"strategy": "fsdp"}：ddp（默认）、fsdp、deepspeed_zero2 或 deepspeed_zero3。'
            "分片训练的检查点可以续训。", advanced=True),
    )
    # A type that generates with the model on each rank between training rounds (kbalign) cannot shard parameters.
    generates_while_training: ClassVar[bool] = False

    @field_validator("init_from")
    @classmethod
    def _task_ref(cls, value: str | None) -> str | None:
        if value is not None and not TASK_REF.match(value):
            raise PydanticCustomError("task_ref", "must name a succeeded task as task:<task id>")
        return value

    @field_validator("quantization")
    @classmethod
    def _quantization_needs_lora(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("use_lora") is False:
            raise PydanticCustomError("needs_lora", "a quantized base model can only train a LoRA adapter "
                                                    "(set use_lora: true, or leave quantization out)")
        return value


class PackedLMConfig(LMConfig):
    """The LM types trained by trl's SFTTrainer (sft, kbalign), which can pack rows (trl's DPO trainer cannot)."""

    packing: bool = Field(
        default=False, description="Pack several short rows into one max_length sequence without padding (trl's "
        "best-fit packing, padding-free). Faster on GPUs when rows are much shorter than "
        "max_length; the loss still covers the answers only.", json_schema_extra=texts(
            "序列打包", "Packing",
            "把多条短行打包进一个 max_length 序列而不做填充（trl 的 best-fit 打包）。行远短于 max_length 时在 GPU 上更"
            "快；损失仍只计算回答部分。", advanced=True),
    )


class PredictingLMConfig(LMConfig):
    """The LM types whose held-out rows get generated answers after training, scored against their references
    (sft, dpo; trainers.common.predictions). KBAlign's own KB-QA evaluation (base model and every round) fills the
    same predictions file."""

    predict_after_training: bool = Field(
        default=True, description="After training, answer the held-out rows (eval_data_path, or the eval_ratio "
        "split) greedily with the same RAG prompt the task trained on, and score the answers against the references "
        "(exact match, token F1, ROUGE-L): predictions.jsonl and predictions_summary.json in the output. Nothing "
        "happens without held-out rows.",
        json_schema_extra=texts(
            "训练后生成预测", "Predict after training",
            "训练结束后用微调模型回答验证集中的问题，并与参考答案比较打分（精确匹配、词级 F1、ROUGE-L），结果写入 "
            "predictions.jsonl。需要 eval_data_path 或 eval_ratio。",
            "Answer the held-out rows with the tuned model and score them against their references (exact match, "
            "token F1, ROUGE-L) into predictions.jsonl. Needs eval_data_path or eval_ratio.", advanced=True),
    )
    predict_max_new_tokens: int = Field(
        default=64, ge=1, le=4096, description="Longest generated answer of a prediction, in tokens.",
        json_schema_extra=texts("预测最大生成长度（token）", "Prediction length (tokens)",
                                "每条验证集问题最多生成的 token 数。", advanced=True),
    )
    predict_max_rows: int = Field(
        default=200, ge=1, le=100000, description="Most held-out rows answered (the first ones of the split).",
        json_schema_extra=texts("预测条数上限", "Rows predicted", "最多回答并打分的验证集条数（取最前面的行）。",
                                advanced=True),
    )
    eval_before: bool = Field(
        default=False, description="Also answer and score the same held-out rows with the base model before "
        "training, so the scores can be compared before -> after. Needs predict_after_training and held-out rows.",
        json_schema_extra=texts("同时评测基座模型", "Score the base model too",
                                "训练前先用基座模型回答同样的验证集问题，以便对比训练前后的分数。需要开启训练后生成预测，"
                                "并有验证集。", advanced=True),
    )

    @field_validator("eval_before")
    @classmethod
    def _before_needs_predictions(cls, value: bool, info: ValidationInfo) -> bool:
        if not value:
            return value
        if info.data.get("predict_after_training") is False:
            raise PydanticCustomError("needs_predictions", "scoring the base model needs predict_after_training: "
                                                           "true")
        if not info.data.get("eval_data_path") and not info.data.get("eval_ratio"):
            raise PydanticCustomError("needs_eval_rows", "scoring the base model needs held-out rows: set "
                                                         "eval_data_path or eval_ratio")
        return value


# Training arguments the platform sets itself: where the task writes, what it resumes from, what it uploads.
PLATFORM_OWNED_ARGS = frozenset({
    "output_dir", "logging_dir", "overwrite_output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "push_to_hub_model_id",
    "push_to_hub_organization", "push_to_hub_token",
})
# Arguments that may name a file to read (or hold its contents inline as a mapping).
FILE_ARGS = ("deepspeed", "fsdp_config", "accelerator_config")


def load_extra_args(config: LMConfig, workspace: Path | None = None) -> dict[str, Any]:
    """Reads `config_file` (YAML or JSON mapping). Cheap: used by validate_data and by the trainers.

    A parse error says where (line and column) and what kind of mistake, never what the line holds.
    """
    if not config.config_file:
        return {}
    field = "config_file"
    path = readable_file(config.config_file, field, workspace, error=ConfigError)
    where = shown(path, policy(workspace).workspace)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{field}: {where} is not UTF-8 text (byte {exc.start})") from None
    data = _parse_mapping(text, path.suffix.lower() == ".json", field, where)
    owned = sorted(set(data) & PLATFORM_OWNED_ARGS)
    if owned:
        raise ConfigError(field, f"{field}: {where}: {', '.join(map(repr, owned))} cannot be set here; the platform "
                                 "sets it for every task")
    for name in FILE_ARGS:
        if isinstance(data.get(name), str):
            data[name] = str(readable_file(data[name], f"{field}.{name}", workspace, error=ConfigError))
    return data


def _parse_mapping(text: str, is_json: bool, field: str, where: str) -> dict[str, Any]:
    if is_json:
        import json

        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(field, f"{field}: {where} line {exc.lineno} column {exc.colno}: not valid JSON "
                                     f"({exc.msg})") from None
        except RecursionError:
            raise ConfigError(field, f"{field}: {where} is nested too deeply") from None
    else:
        import yaml  # YAML is a superset of JSON, so any other suffix is read as YAML

        try:
            data = yaml.safe_load(text) or {}
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(field, f"{field}: {where}{at}: not valid YAML ({exc.problem or 'syntax error'})") from None
        except (yaml.YAMLError, RecursionError):
            raise ConfigError(field, f"{field}: {where} is not valid YAML") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(field, f"{field}: {where} must hold a mapping of argument names to values")
    return data
