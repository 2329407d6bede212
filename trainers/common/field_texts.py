"""The console's words for a config field: a Chinese and an English title and help text, written beside the field.

A config Field passes `texts(...)` as its json_schema_extra, so the words land in that field's JSON schema property,
which the console form shows in the user's language (one source per field; tests/test_field_texts.py checks that no
field of a registered type lacks them). The English help is the field's `description` unless one is given: the
description already is the English help the API docs and templates show.
"""

from __future__ import annotations

from typing import Any

TITLE_ZH, TITLE_EN, HELP_ZH, HELP_EN = "title_zh", "title_en", "help_zh", "help_en"
TEXT_KEYS = (TITLE_ZH, TITLE_EN, HELP_ZH, HELP_EN)


def texts(title_zh: str, title_en: str, help_zh: str, help_en: str | None = None, **schema: Any) -> dict[str, Any]:
    """A Field's json_schema_extra: the four texts, plus any other schema keys (advanced=True, alias_of=...)."""
    extra: dict[str, Any] = {TITLE_ZH: title_zh, TITLE_EN: title_en, HELP_ZH: help_zh, **schema}
    if help_en is not None:
        extra[HELP_EN] = help_en
    return extra


def with_english_help(properties: dict[str, Any]) -> None:
    """Gives every property without its own help_en its description as help_en, so the schema says both languages."""
    for prop in properties.values():
        if isinstance(prop, dict) and not prop.get(HELP_EN) and prop.get("description"):
            prop[HELP_EN] = prop["description"]
