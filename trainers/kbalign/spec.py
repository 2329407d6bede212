"""KBAlign's config model and input validator, registered as task type "kbalign". Cheap to import: no torch.

KBAlign (arXiv 2411.14790) adapts a model to a knowledge base by itself: the model annotates question-answer pairs
from the knowledge base (several short-range pairs per chunk, long-range pairs over clusters of related chunks),
then is tuned on them over several rounds, each later round training on its own self-verification critiques. See
trainers/kbalign/README.md for the paper's steps, the reference code's files and what this trainer does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from trainers.common.config import PackedLMConfig, load_extra_args
from trainers.common.field_texts import texts
from trainers.common.model_loading import confine_local_model
from trainers.common.jsonl import load_rows
from trainers.kbalign.kb import KnowledgeBase, kb_rows, load_kb
from trainers.registry import DataReport, TaskType, register

class KbalignConfig(PackedLMConfig):
    schema_order = ("model_name_or_path", "input_path", "output_dir", "use_lora", "iter_num",
                    "embedding_model_name_or_path", "max_chunks", "pairs_per_chunk", "long_pairs", "chunk_size",
                    "chunk_overlap", "cluster_size", "rag_ratio", "retrieval_top_k", "eval_mode")
    generates_while_training = True  # annotation and evaluation between rounds: no parameter-sharding strategy

    input_path: str = Field(
        min_length=1,
        description="The knowledge base: an uploaded dataset (dataset:<id>) or a path on the agent (relative to "
        "its workspace). A JSONL file of chunks {text, title?, id?}, a JSON list of strings, a folder of .txt/.md "
        "files (read recursively), or a JSONL file of already annotated chat rows {messages: [...]} (then the "
        "self-annotation stages are skipped).",
        json_schema_extra=texts(
            "知识库", "Knowledge base",
            "知识库：上传的数据集（dataset:<id>）或 agent 上的路径（相对其工作区）。可以是分块 JSONL {text, title?, "
            "id?}、字符串的 JSON 列表、.txt/.md 文件夹（递归读取），或已标注的对话行 JSONL {messages: [...]}（此时跳过"
            "自标注阶段）。"),
    )
    iter_num: int = Field(default=2, ge=1, le=20, description="Tuning rounds. The annotated pairs are split into "
                          "this many parts; round 1 trains on part 1, each later round on its part plus the model's "
                          "own verification critiques of it.",
                          json_schema_extra=texts(
                              "调优轮数", "Tuning rounds",
                              "调优轮数。标注出的问答对分成这么多份：第 1 轮训练第 1 份，之后每轮训练自己那份，再加上模"
                              "型对它的自我验证批注。"))
    embedding_model_name_or_path: str | None = Field(
        default=None, description="Sentence-embedding model (sentence-transformers; a local directory or a hub id) "
        "that embeds chunks and questions for clustering and retrieval, as the reference code does (MiniLM, BGE). "
        "Empty: the tuned model's own mean-pooled hidden states, a weaker retriever (the dry run warns).",
        json_schema_extra=texts(
            "检索向量模型", "Embedding model",
            "为聚类和检索编码分块和问题的句向量模型（sentence-transformers；本地目录或仓库 ID），与参考代码相同（MiniLM"
            "、BGE）。留空：用被训练模型自身均值池化的隐状态，检索效果较弱（试运行会警告）。"),
    )
    # --- short-range annotation ---
    max_chunks: int = Field(default=2000, ge=1, description="Annotation budget: at most this many chunks are "
                            "annotated with short-range pairs; a larger knowledge base is sampled evenly across its "
                            "whole length.",
                            json_schema_extra=texts(
                                "最多标注分块数", "Max chunks annotated",
                                "标注预算：最多为这么多分块生成短程问答对；更大的知识库在全长上均匀抽样。"))
    pairs_per_chunk: int = Field(default=3, ge=1, le=20, description="Question-answer pairs asked for (and kept at "
                                 "most) per chunk.",
                                 json_schema_extra=texts(
                                     "每块问答对数", "Pairs per chunk",
                                     "每个分块请求（并最多保留）的问答对数。"))
    max_attempts: int = Field(default=3, ge=1, le=10, description="Times a chunk is asked again when none of its "
                              "pairs passes the filters (the reference code retries up to 3 times).",
                              json_schema_extra=texts(
                                  "最多尝试次数", "Max attempts",
                                  "一个分块的问答对都没通过过滤时重新请求的次数（参考代码最多重试 3 次）。"))
    # --- long-range annotation ---
    long_pairs: int = Field(default=200, ge=0, description="Most long-range pairs kept (questions over clusters of "
                            "related chunks, answered from several of them); 0 turns long-range annotation off.",
                            json_schema_extra=texts(
                                "长程问答对上限", "Long-range pairs",
                                "最多保留的长程问答对数（针对一簇相关分块提问，由其中多个分块作答）；0 关闭长程标注。"))
    cluster_size: int = Field(default=10, ge=2, le=100, description="Chunks per cluster: MiniBatchKMeans makes "
                              "chunks // cluster_size clusters, each capped at this many members (the reference "
                              "code's 10).",
                              json_schema_extra=texts(
                                  "聚类大小", "Cluster size",
                                  "每簇分块数：MiniBatchKMeans 聚出 分块数 // cluster_size 个簇，每簇最多这么多成员（参"
                                  "考代码为 10）。"))
    long_questions_per_cluster: int = Field(default=3, ge=1, le=20, description="Questions asked per cluster.",
                                            json_schema_extra=texts(
                                                "每簇问题数", "Questions per cluster",
                                                "每个簇提出的长程问题数。", advanced=True))
    long_answer_passages: int = Field(default=10, ge=1, le=100, description="Passages of its cluster each "
                                      "long-range question is answered against (most similar first); the answers "
                                      "that say something are merged into one.", json_schema_extra=texts(
                                          "长程作答段落数", "Passages per long answer",
                                          "每个长程问题参照其所在簇中多少个段落作答（最相似的优先）；有内容的回答合并为"
                                          "一个。", advanced=True))
    chunk_size: int = Field(default=1000, ge=32, description="Longest chunk, in characters; longer documents are "
                            "cut at paragraph/sentence/word boundaries.",
                            json_schema_extra=texts(
                                "分块大小", "Chunk size",
                                "最长分块的字符数；更长的文档在段落、句子或词的边界处切分。"))
    chunk_overlap: int = Field(default=100, ge=0, description="Characters shared by neighbouring chunks of a "
                               "document (less than chunk_size).",
                               json_schema_extra=texts(
                                   "分块重叠", "Chunk overlap",
                                   "同一文档相邻分块共享的字符数（小于 chunk_size）。"))
    # --- training prompts ---
    rag_ratio: float = Field(default=0.5, ge=0, le=1, description="Share of the training prompts that carry the "
                             "passages retrieved from the knowledge base for their question (so the model sees "
                             "retrieval noise); the rest are closed-book. The reference code's coin flip: 0.5.",
                             json_schema_extra=texts(
                                 "RAG 提示比例", "RAG prompt ratio",
                                 "训练提示中附带从知识库为其问题检索到的段落的比例（让模型见到检索噪声），其余为闭卷提"
                                 "问。参考代码的抛硬币：0.5。"))
    retrieval_top_k: int = Field(default=8, ge=1, le=50, description="Passages retrieved per question (training "
                                 "prompts, verification drafts, RAG evaluation); the reference code's 8.",
                                 json_schema_extra=texts(
                                     "检索段落数", "Retrieved passages",
                                     "每个问题检索的段落数（训练提示、验证草稿、RAG 评测）；参考代码为 8。"))
    general_data_path: str | None = Field(
        default=None, description="Optional general-domain chat data {messages: [...]} (an uploaded dataset or a "
        "path on the agent) mixed into every round, so the model keeps its general abilities.",
        json_schema_extra=texts(
            "通用数据", "General data",
            "可选的通用领域对话数据 {messages: [...]}（上传的数据集或 agent 上的路径），混入每一轮，让模型保持通用能力"
            "。"),
    )
    general_data_ratio: float = Field(default=0.2, ge=0, le=10, description="General-domain rows mixed in per "
                                      "knowledge-base training record (with general_data_path).",
                                      json_schema_extra=texts(
                                          "通用数据比例", "General data ratio",
                                          "每条知识库训练记录混入的通用领域行数（需要 general_data_path）。"))
    # --- evaluation ---
    eval_ratio: float = Field(default=0.1, ge=0, lt=1, description="Share of the annotated pairs held out as KB-QA "
                              "evaluation questions (ignored when eval_data_path is given).",
                              json_schema_extra=texts(
                                  "验证集比例", "Held-out ratio",
                                  "留出作为知识库问答评测题的问答对比例（给了 eval_data_path 时忽略）。", advanced=True))
    eval_data_path: str | None = Field(
        default=None, description="Held-out KB-QA questions: chat rows {messages: [...]}, the last user turn the "
        "question and the last assistant turn its reference answer.", json_schema_extra=texts(
            "验证数据", "Evaluation data",
            "留出的知识库问答题：对话行 {messages: [...]}，最后一个 user 轮是问题，最后一个 assistant "
            "轮是参考答案。", advanced=True),
    )
    eval_mode: Literal["rag", "closed_book", "both"] = Field(
        default="both", description="How the KB-QA evaluation asks (base model, then after every round): rag = with "
        "the passages retrieved for the question, closed_book = the question alone, both.",
        json_schema_extra=texts(
            "评测方式", "Evaluation mode",
            "知识库问答评测的提问方式（先评基座模型，之后每轮评一次）：rag = 附上为问题检索到的段落，closed_book = 只有"
            "问题，both = 两种都做。"))
    eval_max_questions: int = Field(default=200, ge=1, description="Most evaluation questions asked per phase.",
                                    json_schema_extra=texts(
                                        "最多评测题数", "Max evaluation questions",
                                        "每个阶段最多提问的评测题数。", advanced=True))
    # --- generation ---
    max_new_tokens: int = Field(default=256, ge=4, description="Longest generation (annotation replies, drafts, "
                                "critiques, evaluation answers).", json_schema_extra=texts(
                                    "最大生成长度", "Max new tokens",
                                    "最长生成的 token 数（标注回复、草稿、批注、评测回答）。", advanced=True))
    temperature: float = Field(default=0.7, gt=0, description="Sampling temperature of the annotation.",
                               json_schema_extra=texts(
                                   "采样温度", "Sampling temperature",
                                   "标注时的采样温度。", advanced=True))
    top_p: float = Field(default=0.9, gt=0, le=1, description="Nucleus sampling of the annotation.",
                         json_schema_extra=texts("核采样 top_p", "Top-p", "标注时的核采样阈值。", advanced=True))
    do_sample: bool = Field(default=True, description="Sample the annotation (off: greedy). Drafts, critiques, "
                            "merged answers and evaluation answers are always greedy.", json_schema_extra=texts(
                                "采样生成标注", "Sample annotations",
                                "标注时采样生成（关闭：贪心）。草稿、批注、合并回答和评测回答总是贪心生"
                                "成。", advanced=True))
    generation_batch_size: int = Field(default=8, ge=1, description="Prompts per generate/embedding call (and per "
                                       "resumable step of a stage).", json_schema_extra=texts(
                                           "生成批大小", "Generation batch size",
                                           "每次生成或向量编码调用的提示数（也是阶段内可续跑的步长）。", advanced=True))
    # --- filters (the reference code's) ---
    require_question_mark: bool = Field(default=True, description="Keep a pair only when its question has a '?' "
                                        "(or '？') and its answer has none.", json_schema_extra=texts(
                                            "要求问号", "Require a question mark",
                                            "只保留问题带 '?'（或 '？'）且回答不带问号的问答对。", advanced=True))
    min_question_words: int = Field(default=4, ge=0, description="Fewest words of a question (a Chinese character "
                                    "counts as a word).", json_schema_extra=texts(
                                        "问题最少词数", "Min question words",
                                        "问题的最少词数（一个汉字算一个词）。", advanced=True))
    max_question_words: int = Field(default=25, ge=1, description="Most words of a question.",
                                    json_schema_extra=texts(
                                        "问题最多词数", "Max question words",
                                        "问题的最多词数。", advanced=True))
    min_answer_words: int = Field(default=1, ge=0, description="Fewest words of an answer.",
                                  json_schema_extra=texts(
                                      "回答最少词数", "Min answer words",
                                      "回答的最少词数。", advanced=True))
    max_answer_words: int = Field(default=70, ge=1, description="Most words of an answer.",
                                  json_schema_extra=texts(
                                      "回答最多词数", "Max answer words",
                                      "回答的最多词数。", advanced=True))
    reject_no_answer: bool = Field(default=True, description="Reject a pair whose answer (or question) says the "
                                   "passage does not hold the answer (\"not mentioned\", \"no information\", "
                                   "\"未提及\", ...).", json_schema_extra=texts(
                                       "拒绝无答案的问答对", "Reject no-answer pairs",
                                       "回答（或问题）表示段落中没有答案（\"not mentioned\"、\"no information\"、\"未提"
                                       "及\" 等）时丢弃该问答对。", advanced=True))
    verify_overlap_threshold: float = Field(
        default=0.5, ge=0, le=1, json_schema_extra=texts(
            "验证重合阈值", "Verification overlap threshold",
            "自我验证：模型的批注没有给出可读结论时，草稿与参考答案的词级 F1 达到此值即算正确。", advanced=True),
        description="Self-verification: when the model's critique gives no readable verdict, a draft whose token F1 "
        "with the reference answer reaches this counts as correct.",
    )

    # Field validators (not a model validator) so that an error names the key that is wrong.
    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: ValidationInfo) -> int:
        size = info.data.get("chunk_size")
        if size is not None and value >= size:
            raise ValueError(f"must be less than chunk_size ({size})")
        return value

    @field_validator("max_question_words", "max_answer_words")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low_name = info.field_name.replace("max_", "min_")
        low = info.data.get(low_name)
        if low is not None and value < low:
            raise ValueError(f"must not be less than {low_name} ({low})")
        return value


EMBEDDING_FIELD = "embedding_model_name_or_path"


def load_knowledge_base(config: KbalignConfig, workspace: Path | None = None) -> KnowledgeBase:
    return load_kb(config.input_path, config.chunk_size, config.chunk_overlap, workspace)


def _chat_rows(config: KbalignConfig, field: str, workspace: Path | None, keep: bool = True):
    from trainers.sft.spec import ChatRow

    rows, report = load_rows(getattr(config, field), ChatRow, field=field, workspace=workspace, keep=keep)
    lines = report.lines if len(report.lines) == len(rows) else list(range(1, len(rows) + 1))
    return rows, lines


def load_eval_rows(config: KbalignConfig, workspace: Path | None = None, *, keep: bool = True):
    """eval_data_path's chat rows and their line numbers."""
    return _chat_rows(config, "eval_data_path", workspace, keep)


def load_general_rows(config: KbalignConfig, workspace: Path | None = None, *, keep: bool = True):
    """general_data_path's chat rows and their line numbers."""
    return _chat_rows(config, "general_data_path", workspace, keep)


def validate_data(config: KbalignConfig, workspace: Path) -> DataReport:
    load_extra_args(config, workspace)
    if config.eval_data_path:
        load_eval_rows(config, workspace, keep=False)
    if config.general_data_path:
        load_general_rows(config, workspace, keep=False)
    if config.embedding_model_name_or_path:  # a path must be one tasks may read; its presence is the run's check
        confine_local_model(config.embedding_model_name_or_path, workspace, EMBEDDING_FIELD)
    kb = load_knowledge_base(config, workspace)
    return DataReport(path=kb.path, rows=kb.documents, stats=kb.stats())


def preflight(config: KbalignConfig, workspace: Path) -> dict[str, Any]:
    """Dry-run extras, with the trainer's own code: the training arguments (config_file through transformers'
    parser, QLoRA/Liger on this agent), chunk token lengths (or the annotated rows' fit into max_length), general
    rows too long for max_length, and a warning when no embedding model is given."""
    from trainers.kbalign.train import KBAlignWorkflow

    return KBAlignWorkflow.for_dry_run(config, workspace).dry_run()


DEFAULT_CONFIG = {
    "model_name_or_path": "microsoft/DialoGPT-medium",
    "input_path": "data/kb.jsonl",
    "use_lora": True,  # no gpu_vis: the platform picks free devices (the seed pinned every task to "0")
}

DATA_EXAMPLE = {
    "id": "handbook-3",
    "title": "Refund policy",
    "text": "Customers may return unopened items within 30 days of delivery for a full refund. Opened items can be "
    "exchanged within 14 days.",
}

TASK_TYPE = register(
    TaskType(
        name="kbalign",
        description="KBAlign knowledge-base adaptation: the model annotates question-answer pairs from your "
        "knowledge base itself (several per chunk, and over clusters of related chunks), then is tuned on them over "
        "several rounds with self-verification; KB-QA exact match and F1 before and after every round. LoRA by "
        "default.",
        config_model=KbalignConfig,
        entry_module="trainers.kbalign",
        validate_data=validate_data,
        default_config=DEFAULT_CONFIG,
        data_example=DATA_EXAMPLE,
        preflight=preflight,
        input_fields=("input_path", "eval_data_path", "general_data_path", "init_from"),
        row_parser=kb_rows,
        title_zh="知识库对齐 KBAlign",
        title_en="Knowledge-base alignment (KBAlign)",
        summary_zh="模型自己从知识库标注问答对，多轮自我验证训练，适配你的知识库。",
        summary_en="The model annotates question-answer pairs from your knowledge base itself and is tuned on them "
        "over rounds of self-verification.",
    )
)
