"""Every field of every registered type's config speaks both languages: a Chinese and an English title and help text
in the field's own spec (trainers/common/field_texts.py), and every type card has a human name and a summary."""

from __future__ import annotations

import re

import pytest
from pydantic import Field

from trainers import registry
from trainers.common.config import TaskConfig
from trainers.common.field_texts import TEXT_KEYS, texts
from trainers.registry import TYPE_TEXTS, TaskType

CJK = re.compile(r"[\u4e00-\u9fff]")


def missing_texts(task_type: TaskType) -> list[str]:
    """'type.field: what is wrong' for each field of the type's schema that lacks a text in either language."""
    problems = []
    for name, prop in task_type.json_schema()["properties"].items():
        where = f"{task_type.name}.{name}"
        for key in TEXT_KEYS:
            value = prop.get(key)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{where}: no {key}")
        for key in ("title_zh", "help_zh"):
            value = prop.get(key) or ""
            if value.strip() == name or (value and not CJK.search(value)):
                problems.append(f"{where}: {key} {value!r} is not Chinese")
        if (prop.get("title_en") or "").strip() == name:
            problems.append(f"{where}: title_en is the raw key")
    return problems


def all_types() -> list[TaskType]:
    types = registry.all_types()
    assert {"sft", "dpo", "embedding", "kbalign", "export"} <= {t.name for t in types}
    return types


@pytest.mark.parametrize("task_type", all_types(), ids=lambda t: t.name)
def test_every_field_has_both_languages(task_type):
    assert missing_texts(task_type) == []


def test_init_from_speaks_both_languages():
    for name in ("sft", "dpo", "kbalign"):
        prop = registry.get(name).json_schema()["properties"]["init_from"]
        assert CJK.search(prop["title_zh"]) and prop["title_en"] and prop["help_zh"] and prop["help_en"]


def test_english_help_defaults_to_the_description():
    prop = registry.get("sft").json_schema()["properties"]["learning_rate"]
    assert prop["help_en"] == prop["description"] == "Peak learning rate."
    assert (prop["title_zh"], prop["title_en"], prop["help_zh"]) == ("学习率", "Learning rate", "峰值学习率。")


def test_the_check_catches_a_field_without_texts():
    class Bare(TaskConfig):
        plain: int = Field(default=1, description="A field nobody translated.")
        half: int = Field(default=1, description="Only English.", json_schema_extra={"title_en": "Half"})
        raw: int = Field(default=1, description="Raw key as its Chinese title.",
                         json_schema_extra=texts("raw", "Raw", "原样的键。"))

    bare = TaskType(name="bare", description="", config_model=Bare, entry_module="", validate_data=lambda c, w: None,
                    default_config={}, data_example={})
    problems = missing_texts(bare)
    assert "bare.plain: no title_zh" in problems and "bare.plain: no help_zh" in problems
    assert "bare.half: no title_zh" in problems and not any(p.startswith("bare.half: no title_en") for p in problems)
    assert "bare.raw: title_zh 'raw' is not Chinese" in problems
    assert not any(p.startswith("bare.gpu_vis") for p in problems)  # the shared base's fields have theirs


@pytest.mark.parametrize("task_type", all_types(), ids=lambda t: t.name)
def test_every_type_card_has_a_name_and_summary_in_both_languages(task_type):
    card = task_type.json_schema()[TYPE_TEXTS]
    assert all(isinstance(card[k], str) and card[k].strip() for k in ("title_zh", "title_en", "summary_zh",
                                                                       "summary_en")), card
    assert CJK.search(card["title_zh"]) and CJK.search(card["summary_zh"])


def test_the_named_type_cards():
    names = {t.name: t.json_schema()[TYPE_TEXTS] for t in all_types()}
    assert [names[n]["title_zh"] for n in ("sft", "dpo", "embedding", "kbalign")] == [
        "监督微调 SFT", "偏好优化 DPO", "向量模型 Embedding", "知识库对齐 KBAlign"]
    assert [names[n]["title_en"] for n in ("sft", "dpo", "embedding", "kbalign")] == [
        "Supervised fine-tuning (SFT)", "Preference optimization (DPO)", "Embedding model",
        "Knowledge-base alignment (KBAlign)"]


def test_embedding_alias_is_marked_so_the_form_shows_one_input():
    props = registry.get("embedding").json_schema()["properties"]
    assert props["train_data_path"]["alias_of"] == "train_data" and "alias_of" not in props["train_data"]


def test_kbalign_template_does_not_pin_a_device():
    kbalign = registry.get("kbalign")
    assert "gpu_vis" not in kbalign.default_config
    assert kbalign.parse_config(kbalign.default_config).gpu_vis is None
