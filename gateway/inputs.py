"""Parsing of the POST /api/finetune/start body, done by hand so every mistake is a 400 naming the field
(FastAPI's body models would answer 422 with a different shape) and so `config` keeps its exact JSON types."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from gateway.errors import bad_request
from gateway.json_body import load_json


class StartTaskBody(BaseModel):
    """Documents the body in OpenAPI only; parse_start_body is what enforces it."""

    type: str = Field(description="task type: sft, dpo, embedding or kbalign (see /api/finetune/templates)")
    config: dict[str, Any] = Field(description="the type's config; omitted keys take the template's defaults")


def openapi_json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body that a route parses itself (so FastAPI does not validate it)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def object_schema(**properties: str) -> dict[str, Any]:
    """A JSON schema of an object whose keys (all required) have these JSON types."""
    return {"type": "object", "required": list(properties), "properties": {k: {"type": v} for k, v in properties.items()}}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def parse_object_body(raw: bytes, fields: dict[str, type], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object body with exactly these keys (those in `optional` may be missing); else ApiError(400) naming
    the field. Strings must be non-empty."""
    body = load_json(raw)
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {_json_kind(body)}")

    unknown = sorted(k for k in body if k not in fields)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise bad_request(f"unknown top-level field(s) {names}; allowed: {', '.join(fields)}", field=unknown[0])

    for name, kind in fields.items():
        if name not in body and name in optional:
            continue
        value = body.get(name)
        if kind is str:
            if not isinstance(value, str) or not value.strip():
                got = "missing" if name not in body else f"got {_json_kind(value)} {json.dumps(value)[:80]}"
                raise bad_request(f"'{name}' must be a non-empty string ({got})", field=name)
            body[name] = value.strip()
        elif not isinstance(value, kind):
            got = "missing" if name not in body else f"got {_json_kind(value)}"
            raise bad_request(f"'{name}' must be a JSON {_json_kind(kind())} ({got})", field=name)
    return body


def parse_start_body(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Return (type, config) or raise ApiError(400)."""
    body = parse_object_body(raw, {"type": str, "config": dict})
    return body["type"], body["config"]
