"""Embedding's config model, data-row model and validator, registered as task type "embedding". Cheap to import: no
torch, no sentence-transformers (those load in trainers.embedding.train, or inside `preflight` only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from trainers.common.config import ReportTo, TaskConfig, load_extra_args
from trainers.common.field_texts import texts
from trainers.common.model_loading import confine_local_model
from trainers.common.jsonl import RowChecker, load_rows
from trainers.registry import DataReport, TaskType, register

DEFAULT_SCALE = 20.0  # = 1 / temperature 0.05, sentence-transformers' and FlagEmbedding's usual setting
GIST_LOSSES = ("gist", "cached_gist")


class EmbeddingConfig(TaskConfig):
    schema_order = ("model_name_or_path", "train_data", "train_data_path", "output_dir", "config_file",
                    "learning_rate", "num_train_epochs", "per_device_train_batch_size", "loss", "num_hard_negatives",
                    "query_instruction", "max_seq_length", "scale", "temperature", "mini_batch_size")

    model_name_or_path: str = Field(
        min_length=1,
        description="Base embedding model: a local directory (a sentence-transformers model, or a plain Hugging "
        "Face encoder such as BERT, which gets mean pooling) or a model hub id.",
        json_schema_extra=texts(
            "基座向量模型", "Base embedding model",
            "基座向量模型：本地目录（sentence-transformers 模型，或 BERT 这类普通 Hugging Face 编码器，会加上均值池化）"
            "或模型仓库 ID。"),
    )
    # train_data_path comes before train_data in the class so train_data's validator can see it (the form's order is
    # schema_order's).
    train_data_path: str | None = Field(
        default=None, min_length=1, description="Alias of train_data (give one of the two).",
        json_schema_extra=texts(
            "训练数据（别名）", "Training data (alias)",
            "train_data 的别名（两者只给一个）。表单只显示 train_data。", advanced=True,
            alias_of="train_data"),  # the console shows one input for the two keys
    )
    train_data: str | None = Field(
        default=None, min_length=1, validate_default=True,
        description="JSONL training data: an uploaded dataset (dataset:<id>) or a path on the agent (relative to "
        'its workspace), one row per query: {"query": "...", "pos": ["relevant passage", ...], "neg": ["hard '
        'negative", ...]} (neg may be empty). Required (or its alias train_data_path).',
        json_schema_extra=texts(
            "训练数据", "Training data",
            "JSONL 训练数据：上传的数据集（dataset:<id>）或 agent 上的路径（相对其工作区），每行一个查询：{\"query\": "
            "\"...\", \"pos\": [\"相关段落\", ...], \"neg\": [\"难负例\", ...]}（neg 可为空）。必填（或用别名 "
            "train_data_path）。"),
    )
    output_dir: str | None = Field(
        default=None,
        description="Where the trained sentence-transformers model is saved, on the agent that runs the task "
        "(relative to its workspace; a directory no other task used). Default: a directory of the task's own, "
        "<output root>/embedding/<task id>.",
        json_schema_extra=texts(
            "输出目录", "Output directory",
            "训练好的 sentence-transformers 模型在运行任务的 agent 上的保存位置（相对其工作区；须是其他任务没用过的目录"
            "）。默认：任务自己的目录 <输出根目录>/embedding/<任务 ID>。"),
    )
    config_file: str | None = Field(
        default=None,
        description="Optional YAML or JSON file of extra training arguments (SentenceTransformerTrainingArguments / "
        "HF TrainingArguments names), applied on top of these options.",
        json_schema_extra=texts(
            "额外参数文件", "Extra arguments file",
            "可选的 YAML 或 JSON 文件，写 SentenceTransformerTrainingArguments / HF TrainingArguments 的参数名，覆盖在"
            "这些选项之上。"),
    )
    learning_rate: float = Field(default=2e-5, gt=0, description="Peak learning rate.",
                                 json_schema_extra=texts("学习率", "Learning rate", "峰值学习率。"))
    num_train_epochs: float = Field(default=3, gt=0, description="Passes over the training data.",
                                    json_schema_extra=texts("训练轮数", "Epochs", "遍历训练数据的次数。"))
    per_device_train_batch_size: int = Field(
        default=16, ge=1, description="Queries per batch on each device. With the in-batch-negatives losses every "
        "other query's passages are negatives too, so larger batches train better (see cached_mnrl).",
        json_schema_extra=texts(
            "每卡批大小", "Batch size per device",
            "每个设备上一批的查询数。批内负例类损失会把其他查询的段落也当作负例，所以批越大训练效果越好（见 cached_mnrl"
            "）。"),
    )
    loss: Literal["mnrl", "cached_mnrl", "gist", "cached_gist"] = Field(
        default="mnrl",
        description="mnrl: MultipleNegativesRankingLoss (InfoNCE over in-batch and hard negatives). cached_mnrl: the "
        "same loss computed in mini-batches (GradCache), for batch sizes that do not fit in memory at once. gist: "
        "GISTEmbedLoss, the same contrast but a guide model (guide_model_name_or_path) drops in-batch and hard "
        "negatives it scores above the positive (likely false negatives); at most 1 hard negative per example. "
        "cached_gist: GIST in mini-batches (any number of hard negatives).",
        json_schema_extra=texts(
            "损失函数", "Loss",
            "mnrl：MultipleNegativesRankingLoss（批内负例和难负例上的 InfoNCE）。cached_mnrl：同一损失分小批计算（"
            "GradCache），用于一次放不进显存的大批。gist：GISTEmbedLoss，由引导模型（guide_model_name_or_path）剔除得分"
            "高于正例的负例（可能是假负例），每例最多 1 个难负例。cached_gist：分小批计算的 GIST（难负例数不限）。"),
    )
    guide_model_name_or_path: str | None = Field(
        default=None, min_length=1,
        description="gist / cached_gist only: the guide model that judges which negatives are false negatives (a "
        "local directory or a hub id, like model_name_or_path). Default: a frozen copy of the base model.",
        json_schema_extra=texts(
            "引导模型", "Guide model",
            "仅用于 gist / cached_gist：判断哪些负例是假负例的引导模型（本地目录或仓库 ID，同 model_name_or_path）。默"
            "认：基座模型的冻结副本。", advanced=True),
    )
    mini_batch_size: int = Field(
        default=32, ge=1, description="cached_mnrl / cached_gist only: texts embedded at once; memory use, not the "
        "result, depends on it.", json_schema_extra=texts(
            "小批大小", "Mini-batch size",
            "仅用于 cached_mnrl / cached_gist：一次编码的文本数；只影响显存占用，不影响结果。", advanced=True),
    )
    num_hard_negatives: int = Field(
        default=1, ge=0, le=64,
        description="Hard negatives per training example (0: in-batch negatives only). They come from the row's "
        "`neg`, taken in turn and repeated when it has fewer; a row without `neg` gets them mined (see "
        "hard_negative_mining). gist takes at most 1.",
        json_schema_extra=texts(
            "难负例数", "Hard negatives",
            "每个训练样本的难负例数（0：只用批内负例）。取自该行的 neg，轮流取用、不足时重复；没有 neg 的行会自动挖掘（"
            "见 hard_negative_mining）。gist 最多取 1 个。"),
    )
    hard_negative_mining: bool = Field(
        default=True,
        description="Rows without `neg`: mine hard negatives for them with the base model before training "
        "(sentence-transformers' mine_hard_negatives over every training passage; never the row's own positives). "
        "false: such rows train with in-batch negatives only.",
        json_schema_extra=texts(
            "挖掘难负例", "Mine hard negatives",
            "对没有 neg 的行，训练前用基座模型在全部训练段落中挖掘难负例（不会选到该行自己的正例）。关闭：这些行只用批"
            "内负例训练。", advanced=True),
    )
    mining_relative_margin: float = Field(
        default=0.05, ge=0, lt=1,
        description="False-negative guard of the mining: a candidate scoring above positive score - margin x "
        "|positive score| is skipped as probably relevant. 0.05 is NV-Retriever's TopK-PercPos (95%) setting.",
        json_schema_extra=texts(
            "挖掘相对间隔", "Mining relative margin",
            "挖掘时防止假负例：得分高于 正例得分 − 间隔 × |正例得分| 的候选视为可能相关而跳过。0.05 是 NV-Retriever 的 "
            "TopK-PercPos（95%）设置。", advanced=True),
    )
    matryoshka_dims: list[int] | None = Field(
        default=None, min_length=1,
        description="Train with MatryoshkaLoss at these embedding sizes (e.g. [768, 256, 64]) so embeddings can be "
        "cut to any of them; each at most the model's embedding dimension (sorted largest first). The held-out "
        "queries are also scored at the smallest size after training.",
        json_schema_extra=texts(
            "Matryoshka 维度", "Matryoshka dimensions",
            "用 MatryoshkaLoss 在这些向量维度上训练（如 [768, 256, 64]），之后向量可截断到其中任一维度；每个都不超过模"
            "型的向量维度（从大到小排序）。训练后也在最小维度上评测留出的查询。", advanced=True),
    )
    query_instruction: str | None = Field(
        default=None,
        description='Prefix added to every query at training and evaluation time, e.g. "Represent this sentence for '
        'searching relevant passages: " for BGE models. Saved as the model\'s "query" prompt, so '
        "model.encode_query() applies it.",
        json_schema_extra=texts(
            "查询指令前缀", "Query instruction",
            "训练和评测时加在每个查询前的前缀，如 BGE 模型的 \"Represent this sentence for searching relevant passages:"
            " \"。保存为模型的 \"query\" 提示，model.encode_query() 会自动加上。"),
    )
    max_seq_length: int | None = Field(
        default=None, ge=8, description="Longest tokenized text; longer ones are cut. Default: the model's own limit.",
        json_schema_extra=texts(
            "最大序列长度", "Max sequence length",
            "分词后最长的文本，更长的会被截断。默认：模型自身的上限。"),
    )
    scale: float | None = Field(
        default=None, gt=0,
        description=f"Similarity scale of the contrastive loss: logits = scale x cosine similarity; scale = "
        f"1 / temperature. Default {DEFAULT_SCALE:g} (temperature {1 / DEFAULT_SCALE:g}). Give scale or temperature.",
        json_schema_extra=texts(
            "相似度缩放", "Similarity scale",
            "对比损失的相似度缩放：logits = scale × 余弦相似度；scale = 1 / temperature。默认 20（温度 0.05）。scale 和"
            " temperature 只给一个。", advanced=True),
    )
    temperature: float | None = Field(
        default=None, gt=0,
        description="The loss temperature, the other way to set `scale` (scale = 1 / temperature).",
        json_schema_extra=texts(
            "损失温度", "Temperature",
            "损失的温度，设置 scale 的另一种方式（scale = 1 / temperature）。", advanced=True),
    )
    max_steps: int = Field(default=-1, ge=-1, description="Stop after this many optimizer steps (-1: use epochs).",
                           json_schema_extra=texts(
                               "最大步数", "Max steps",
                               "训练到这么多优化步后停止（-1：按训练轮数）。", advanced=True))
    warmup_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Fraction of the steps spent warming the learning rate up from 0.",
        json_schema_extra=texts("预热比例", "Warm-up ratio", "学习率从 0 开始预热所占的步数比例。", advanced=True),
    )
    logging_steps: int = Field(default=1, ge=1, description="Emit loss/progress metrics every N steps.",
                               json_schema_extra=texts(
                                   "日志间隔步数", "Logging steps",
                                   "每隔 N 步上报一次损失和进度。", advanced=True))
    report_to: ReportTo
    eval_data_path: str | None = Field(
        default=None, description="Held-out evaluation rows in the training format (dataset:<id>, or a path on "
        "the agent); scored before, during (see eval_steps) and after training with recall@1/5/10, MRR@10 and nDCG@10.",
        json_schema_extra=texts(
            "验证数据", "Evaluation data",
            "训练格式的留出验证行（dataset:<id> 或 agent 上的路径）；在训练前、训练中（见 eval_steps）和训练后计算 "
            "recall@1/5/10、MRR@10 和 nDCG@10。", advanced=True),
    )
    eval_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Hold this fraction of the training rows out for the retrieval "
        "evaluation before, during and after training (ignored when eval_data_path is given; 0: no evaluation, and "
        "the final model is the last step's).",
        json_schema_extra=texts(
            "验证集比例", "Held-out ratio",
            "留出这一比例的训练行，在训练前、中、后做检索评测（给了 eval_data_path 时忽略；0：不评测，最终模型取最后一"
            "步的）。", advanced=True),
    )
    eval_max_distractors: int = Field(
        default=2000, ge=0, description="Training passages added to the evaluation corpus as distractors, besides "
        "the evaluation rows' own positives and negatives (0: none).", json_schema_extra=texts(
            "评测干扰段落数", "Evaluation distractors",
            "除验证行自己的正例和负例之外，加入评测语料作为干扰项的训练段落数（0：不加）。", advanced=True),
    )
    eval_steps: int | None = Field(
        default=None, ge=1, description="With held-out rows: score them every N steps during training (else every "
        "save_steps, else once per epoch); the checkpoint with the best nDCG@10 becomes the final model.",
        json_schema_extra=texts(
            "验证间隔步数", "Evaluate every N steps",
            "有留出行时，训练中每隔 N 步评测一次（否则按 save_steps，再否则每轮一次）；nDCG@10 最好的检查点成为最终模型"
            "。", advanced=True),
    )
    save_steps: int | None = Field(
        default=None, ge=1, description="Save a checkpoint every N steps (a multiple of eval_steps when both are "
        "given). With held-out rows a checkpoint is saved at every evaluation anyway.",
        json_schema_extra=texts(
            "检查点间隔步数", "Checkpoint every N steps",
            "每隔 N 步保存检查点（同时给了 eval_steps 时须是它的倍数）。有留出行时每次评测都会保存检查"
            "点。", advanced=True),
    )
    save_total_limit: int | None = Field(
        default=3, ge=1, description="Keep at most this many checkpoints (the best one is always kept); older ones "
        "are deleted (none: keep all).", json_schema_extra=texts(
            "最多保留检查点", "Checkpoints kept",
            "最多保留这么多检查点（最好的一个总会保留），更旧的会被删除（留空：全部保留）。", advanced=True),
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Mixed precision; auto = bf16 on GPUs that support it, else fp16; fp32 on CPU.",
        json_schema_extra=texts(
            "计算精度", "Precision",
            "混合精度；auto = 支持的 GPU 上用 bf16，否则 fp16；CPU 上为 fp32。", advanced=True),
    )
    seed: int = Field(default=42, description="Random seed for reproducible runs.",
                      json_schema_extra=texts("随机种子", "Random seed", "随机种子，用于可复现的训练。", advanced=True))

    @field_validator("train_data")
    @classmethod
    def _one_data_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        alias = info.data.get("train_data_path")
        if value is not None and alias is not None:
            raise PydanticCustomError("both_given", "give train_data or its alias train_data_path, not both")
        if value is None and alias is None and "train_data_path" in info.data:  # (a bad alias has its own error)
            raise PydanticCustomError("missing", "Field required (train_data, or its alias train_data_path)")
        return value

    @field_validator("guide_model_name_or_path")
    @classmethod
    def _guide_needs_gist(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("loss") not in GIST_LOSSES:
            raise PydanticCustomError("needs_gist", "a guide model is used by the gist and cached_gist losses only")
        return value

    @field_validator("num_hard_negatives")
    @classmethod
    def _gist_takes_one_negative(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("loss") == "gist":
            raise PydanticCustomError("gist_negatives", "the gist loss takes at most 1 hard negative per example; "
                                                        "use cached_gist for more")
        return value

    @field_validator("matryoshka_dims")
    @classmethod
    def _matryoshka_dims(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if any(dim < 1 for dim in value):
            raise PydanticCustomError("positive", "every dimension must be a positive integer")
        if len(set(value)) != len(value):
            raise PydanticCustomError("distinct", "the dimensions must be distinct")
        return sorted(value, reverse=True)

    @field_validator("save_steps")
    @classmethod
    def _save_at_evaluations(cls, value: int | None, info: ValidationInfo) -> int | None:
        eval_steps = info.data.get("eval_steps")
        if value is not None and eval_steps and value % eval_steps:
            raise PydanticCustomError("multiple", "must be a multiple of eval_steps ({eval_steps}), so the best "
                                                  "checkpoint is one that was evaluated", {"eval_steps": eval_steps})
        return value

    @field_validator("temperature")
    @classmethod
    def _scale_or_temperature(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("scale") is not None:
            raise PydanticCustomError("both_given", "give scale or temperature, not both (scale = 1 / temperature)")
        return value

    @property
    def loss_scale(self) -> float:
        """The loss's scale: `scale`, else 1 / `temperature`, else the default 20 (temperature 0.05)."""
        if self.scale is not None:
            return self.scale
        return 1.0 / self.temperature if self.temperature is not None else DEFAULT_SCALE

    @property
    def data_path(self) -> str:
        """The training data file, whichever of train_data / train_data_path named it."""
        return self.train_data if self.train_data is not None else self.train_data_path  # type: ignore[return-value]

    @property
    def data_field(self) -> str:
        return "train_data" if self.train_data is not None else "train_data_path"


class EmbeddingRow(BaseModel):
    """One query with its relevant passages and (optional) hard negatives; the FlagEmbedding / UltraRAG format."""

    # Strict types, but extra keys (ids, scores, metadata) are the user's business.
    model_config = ConfigDict(strict=True, extra="ignore")

    query: str = Field(min_length=1)
    pos: list[str] = Field(min_length=1)
    neg: list[str] = Field(default_factory=list)


def _count(stats: dict[str, int], row: EmbeddingRow) -> None:
    stats["positives"] += len(row.pos)
    stats["negatives"] += len(row.neg)
    stats["rows_without_negatives"] += not row.neg


def embedding_rows() -> RowChecker:
    """A fresh checker of one file's embedding rows (the type's `row_parser`), counting positives and negatives."""
    return RowChecker(EmbeddingRow.model_validate, {"positives": 0, "negatives": 0, "rows_without_negatives": 0},
                      _count)


def load_embedding_rows(
    config: EmbeddingConfig, workspace: Path | None = None, *, eval_file: bool = False, keep: bool = True
) -> tuple[list[EmbeddingRow], DataReport]:
    """The rows of the training file (or, with eval_file, of eval_data_path), with a few counts as stats;
    keep=False: stats only."""
    field, value = ("eval_data_path", config.eval_data_path) if eval_file else (config.data_field, config.data_path)
    return load_rows(value, embedding_rows(), field=field, workspace=workspace, keep=keep)


def validate_data(config: EmbeddingConfig, workspace: Path) -> DataReport:
    load_extra_args(config, workspace)  # a missing/unparsable config_file fails here too, before any GPU time
    if config.guide_model_name_or_path:  # a path must be one tasks may read; its presence is the dry run's check
        confine_local_model(config.guide_model_name_or_path, workspace, "guide_model_name_or_path")
    if config.eval_data_path:
        load_embedding_rows(config, workspace, eval_file=True, keep=False)
    return load_embedding_rows(config, workspace, keep=False)[1]


def _model_max_seq_length(source: str, tokenizer) -> int:
    """What sentence-transformers will use when max_seq_length is not set: the model's sentence_bert_config.json,
    else the tokenizer's limit capped by the position embeddings."""
    path = Path(source)
    for config_name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
        if (path / config_name).is_file():
            value = json.loads((path / config_name).read_text(encoding="utf-8")).get("max_seq_length")
            if isinstance(value, int):
                return value
    limits = [n for n in (getattr(tokenizer, "model_max_length", None),) if isinstance(n, int) and n < 1_000_000]
    if (path / "config.json").is_file():
        positions = json.loads((path / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
        if isinstance(positions, int):
            limits.append(positions)
    return min(limits) if limits else 512


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _hidden_size(directory: Path) -> int | None:
    config = _json(directory / "config.json") or {}
    size = next((config.get(key) for key in ("hidden_size", "d_model", "dim") if key in config), None)
    return size if isinstance(size, int) else None


# sentence-transformers modules that leave the embedding size as it is.
_SIZE_KEEPING_MODULES = {"Normalize", "Dropout", "LayerNorm"}


def saved_embedding_dimension(source: str) -> int | None:
    """The embedding size a local model directory will produce, read from its files without loading it (for the dry
    run): the encoder's hidden size (a plain HF encoder gets mean pooling), then what the Pooling and Dense modules
    of modules.json make of it. None when it cannot be told (a hub id, a module this does not know)."""
    root = Path(source)
    if not root.is_dir():
        return None
    modules = _json(root / "modules.json")
    if not isinstance(modules, list):
        return _hidden_size(root)
    dim: int | None = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = root / str(module.get("path", ""))
        config = _json(folder / "config.json") or {}
        if kind == "Transformer":
            dim = _hidden_size(folder)
        elif kind == "Pooling":
            dim = config.get("embedding_dimension", config.get("word_embedding_dimension", dim))
            modes = config.get("pooling_mode")
            if isinstance(modes, str):
                modes = [modes]
            if not isinstance(modes, list):  # the older format: one true/false flag per mode
                modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
            dim = dim * max(1, len(modes)) if isinstance(dim, int) else None
        elif kind == "Dense":
            dim = config.get("out_features")
        elif kind not in _SIZE_KEEPING_MODULES:
            return None
    return dim if isinstance(dim, int) else None


def query_passage_token_stats(config: EmbeddingConfig, workspace: Path) -> dict[str, Any]:
    """Token lengths of the queries (with the instruction) and passages vs max_seq_length."""
    from trainers.common.model_loading import load_tokenizer, locate_model
    from trainers.common.token_stats import length_stats

    rows, _ = load_embedding_rows(config, workspace)
    tokenizer = load_tokenizer(config.model_name_or_path, workspace)
    max_len = config.max_seq_length or _model_max_seq_length(locate_model(config.model_name_or_path, workspace),
                                                             tokenizer)
    prefix = config.query_instruction or ""

    def lengths(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []

    passages = [p for r in rows for p in (*r.pos, *r.neg)]
    return {
        "query_tokens": length_stats(lengths([prefix + r.query for r in rows]), max_len),
        "passage_tokens": length_stats(lengths(passages), max_len),
    }


def preflight(config: EmbeddingConfig, workspace: Path) -> dict[str, Any]:
    """Dry-run extras: the trainer's own checks first (training arguments with the config_file extras, the guide
    model, matryoshka_dims against the model's size: a ConfigError like the run's), then the token lengths."""
    from trainers.embedding.train import EmbeddingWorkflow

    checks = EmbeddingWorkflow.for_dry_run(config, workspace).dry_run()
    return {**checks, **query_passage_token_stats(config, workspace)}


DEFAULT_CONFIG = {
    "model_name_or_path": "BAAI/bge-base-zh-v1.5",
    "train_data": "data/embedding.jsonl",
    "learning_rate": 2e-5,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 16,
}

DATA_EXAMPLE = {
    "query": "What is the capital of France?",
    "pos": ["Paris is the capital and largest city of France."],
    "neg": ["Lyon is the third-largest city of France.", "Berlin is the capital of Germany."],
}

TASK_TYPE = register(
    TaskType(
        name="embedding",
        description="Contrastive fine-tuning of a retrieval embedding model (sentence-transformers) on queries with "
        "relevant passages and hard negatives (mined by the model for rows without any); recall@k / MRR / nDCG on "
        "held-out queries before, during (best checkpoint kept) and after training.",
        config_model=EmbeddingConfig,
        entry_module="trainers.embedding",
        validate_data=validate_data,
        default_config=DEFAULT_CONFIG,
        data_example=DATA_EXAMPLE,
        preflight=preflight,
        input_fields=("train_data", "train_data_path", "eval_data_path"),
        row_parser=embedding_rows,
        title_zh="向量模型 Embedding",
        title_en="Embedding model",
        summary_zh="用查询、正例段落和难负例训练检索向量模型，训练前后对比 recall、MRR、nDCG。",
        summary_en="Train a retrieval embedding model on queries, relevant passages and hard negatives; recall, MRR "
        "and nDCG before and after.",
    )
)
