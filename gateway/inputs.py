"""Parsing of JSON request bodies, done by hand so every mistake is a 400 naming the field (FastAPI's body models
would answer 422 with a different shape) and so `config` keeps its exact JSON types. The request models of
gateway/api_models.py say which keys a body has and of what JSON type; the same models document the body."""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel

from gateway.api_models import StartTaskBody
from gateway.errors import bad_request
from gateway.json_body import load_json

# The bodies documented by json_body_doc, by schema name: gateway/openapi_doc.py puts their schemas in components.
DOCUMENTED_BODIES: dict[str, type[BaseModel]] = {}


def json_body_doc(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body that a route parses itself (so FastAPI does not validate it)."""
    DOCUMENTED_BODIES[model.__name__] = model
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def body_fields(model: type[BaseModel]) -> tuple[dict[str, type], tuple[str, ...]]:
    """The model's keys with their Python types (dict[str, Any] -> dict), and the optional ones."""
    fields = {name: typing.get_origin(info.annotation) or info.annotation for name, info in model.model_fields.items()}
    optional = tuple(name for name, info in model.model_fields.items() if not info.is_required())
    return fields, optional


def parse_body(raw: bytes, model: type[BaseModel]) -> dict[str, Any]:
    """A JSON object body with the model's keys (its optional ones may be missing), else ApiError(400)."""
    fields, optional = body_fields(model)
    return parse_object_body(raw, fields, optional=optional)


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
    body = parse_body(raw, StartTaskBody)
    return body["type"], body["config"]
