"""Export's config model and source check, registered as task type "export". Cheap to import: no torch.

An export task is queued by the control plane (ExportTask), not offered as a template: it takes a finished task's
published model (`source: task:<id>`, fetched and unpacked by the agent), merges a LoRA adapter into its base model
or packages a full model as it is, and writes the result into its own output directory, which is its artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from trainers.common.config import TaskConfig
from trainers.common.field_texts import texts
from trainers.common.model_loading import confine_local_model
from trainers.common.task_models import ADAPTER_CONFIG, TASK_REF, Source, inspect_task_model
from trainers.errors import ConfigError
from trainers.registry import DataReport, TaskType, register

EXPORT_TYPE = "export"
SOURCE_FIELD = "source"
BASE_FIELD = "model_name_or_path"

Dtype = Literal["auto", "float32", "float16", "bfloat16"]


class ExportConfig(TaskConfig):
    schema_order = ("source", "model_name_or_path", "merge_lora", "dtype", "output_dir")

    source: str = Field(description="The task whose published model is exported: task:<task id>.",
                        json_schema_extra=texts("来源任务", "Source task", "要导出其已发布模型的任务：task:<任务 ID>。"))
    model_name_or_path: str | None = Field(
        default=None, min_length=1,
        description="The base model of a LoRA adapter (as this agent names it). Default: the adapter's own "
        "base_model_name_or_path (adapter_config.json).",
        json_schema_extra=texts(
            "基座模型", "Base model",
            "LoRA 适配器的基座模型（按本 agent 的命名）。默认：适配器自身的 base_model_name_or_path（"
            "adapter_config.json）。"),
    )
    merge_lora: bool = Field(
        default=True, description="Merge a LoRA adapter into its base model (a model that loads without peft); "
        "false: package the adapter as it is.",
        json_schema_extra=texts(
            "合并 LoRA", "Merge LoRA",
            "把 LoRA 适配器合并进基座模型（得到不需要 peft 就能加载的模型）；关闭：原样打包适配器。"),
    )
    dtype: Dtype = Field(
        default="auto", description="Weights of the exported causal LM; auto = the base model's own dtype.",
        json_schema_extra=texts(
            "权重类型", "Weights dtype",
            "导出的因果语言模型的权重类型；auto = 基座模型自身的类型。"),
    )
    output_dir: str | None = Field(
        default=None, description="Where the export is written (relative to the workspace). Default: "
        "output/export/<task id>.",
        json_schema_extra=texts(
            "输出目录", "Output directory",
            "导出结果的写入位置（相对工作区）。默认：output/export/<任务 ID>。"),
    )

    @field_validator("source")
    @classmethod
    def _task_ref(cls, value: str) -> str:
        if not TASK_REF.match(value):
            raise PydanticCustomError("task_ref", "must name a task's model as task:<task id>")
        return value


def inspect_source(config: ExportConfig) -> Source:
    """The local copy of the source and what kind of model it is; ConfigError naming `source` when it holds none."""
    return inspect_task_model(config.source, SOURCE_FIELD)


def base_model(config: ExportConfig, source: Source) -> str:
    """The base model to merge an adapter into: the config's, else the adapter's own."""
    if config.model_name_or_path:
        return config.model_name_or_path
    if source.adapter_base:
        return source.adapter_base
    raise ConfigError(BASE_FIELD, f"{BASE_FIELD}: the adapter in {source.ref} names no base model "
                                  f"(base_model_name_or_path in {ADAPTER_CONFIG}); give {BASE_FIELD}")


def validate_data(config: ExportConfig, workspace: Path) -> DataReport:
    """Checks the source before any heavy import: it was fetched, holds a model, and an adapter to merge has a base
    model that tasks may read."""
    source = inspect_source(config)
    stats: dict = {"kind": source.kind}
    if source.kind == "lora_adapter" and config.merge_lora:
        base = base_model(config, source)
        if config.model_name_or_path is None:  # a base given in the config is checked like every type's
            try:
                confine_local_model(base, workspace)
            except ConfigError as exc:
                raise ConfigError(BASE_FIELD, f"{exc.message} (the adapter's base_model_name_or_path; give "
                                              f"{BASE_FIELD})") from None
        stats["base_model"] = base
    return DataReport(path=source.ref, rows=0, stats=stats)


DEFAULT_CONFIG = {"source": "task:TASK_ID", "merge_lora": True, "dtype": "auto"}

TASK_TYPE = register(
    TaskType(
        name=EXPORT_TYPE,
        description="Exports a finished task's model: merges a LoRA adapter into its base model (safetensors and "
        "the tokenizer, loadable without peft), or packages a full or sentence-transformers model as it is.",
        config_model=ExportConfig,
        entry_module="trainers.export",
        validate_data=validate_data,
        default_config=DEFAULT_CONFIG,
        data_example={},
        input_fields=(SOURCE_FIELD,),
        listed=False,
        title_zh="模型导出",
        title_en="Model export",
        summary_zh="把已完成任务的 LoRA 适配器合并进基座模型，或原样打包模型。",
        summary_en="Merge a finished task's LoRA adapter into its base model, or package its model as it is.",
    )
)
