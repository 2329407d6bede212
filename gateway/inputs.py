"""Parsing of the POST /api/finetune/start body, done by hand so every mistake is a 400 naming the field
(FastAPI's body models would answer 422 with a different shape) and so `config` keeps its exact JSON types."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from gateway.errors import bad_request

_ALLOWED_KEYS = ("type", "config")


class StartTaskBody(BaseModel):
    """Documents the body in OpenAPI only; parse_start_body is what enforces it."""

    type: str = Field(description="task type: sft, dpo, embedding or kbalign (see /api/finetune/templates)")
    config: dict[str, Any] = Field(description="the type's config; omitted keys take the template's defaults")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def parse_start_body(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Return (type, config) or raise ApiError(400)."""
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as e:
        raise bad_request(f"request body is not valid JSON: {e.msg}: line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise bad_request(f"request body is not valid UTF-8 JSON: {e.reason} at byte {e.start}") from None
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {_json_kind(body)}")

    unknown = sorted(k for k in body if k not in _ALLOWED_KEYS)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise bad_request(f"unknown top-level field(s) {names}; allowed: type, config", field=unknown[0])

    task_type = body.get("type")
    if not isinstance(task_type, str) or not task_type.strip():
        got = "missing" if "type" not in body else f"got {_json_kind(task_type)} {json.dumps(task_type)}"
        raise bad_request(f"'type' must be a non-empty string ({got})", field="type")

    config = body.get("config")
    if not isinstance(config, dict):
        got = "missing" if "config" not in body else f"got {_json_kind(config)}"
        raise bad_request(f"'config' must be a JSON object ({got})", field="config")
    return task_type.strip(), config
