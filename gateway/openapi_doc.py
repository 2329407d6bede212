"""The OpenAPI document: clean operation ids, the error envelope in place of FastAPI's 422, the bearer scheme on the
routes that need a token, and the schemas of the bodies the routes parse themselves and of the SSE events.

What FastAPI cannot know is filled in from the gateway's own rules, so the document cannot drift from them: which
paths are public is gateway.authn's `is_public` (the middleware that enforces it), and a bad parameter is a 400 with
the error JSON (gateway.handlers), never the 422 FastAPI documents by default.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.api_models import ErrorResponse
from gateway.authn import is_public
from gateway.inputs import DOCUMENTED_BODIES

BEARER_SCHEME = "bearer"
_BEARER = HTTPBearer(
    scheme_name=BEARER_SCHEME,
    description="A token from `POST /api/auth/login` (or an API key): `Authorization: Bearer <token>`.",
)
ERROR_REF = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
# The models the SSE events' `data` carry (event_stream_response): no route returns them as JSON, so FastAPI does not
# put them in components.schemas; finish_document does.
STREAM_PAYLOADS: dict[str, type[BaseModel]] = {}
# FastAPI's validation error schemas: the gateway never answers them (a bad parameter is a 400).
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

ERROR_DESCRIPTIONS = {
    400: "bad input; `error.field` names it",
    401: "missing, invalid or expired token",
    403: "not allowed: an admins-only route, or an API key without the scope this needs",
    404: "not found (or somebody else's)",
    409: "in the wrong state for this",
    413: "the body is larger than the gateway accepts",
    429: "too many attempts; `Retry-After` says when to retry",
    503: "control plane unavailable",
}


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that may answer these statuses with the error JSON. A description given as
    `e404="unknown task"` replaces the general one."""
    return {
        status: {"model": ErrorResponse, "description": descriptions.get(f"e{status}", ERROR_DESCRIPTIONS[status])}
        for status in statuses
    }


def download_response(media_type: str, description: str) -> dict[int | str, Any]:
    """`responses=` entry for a 200 that is a file download. Use with `response_class=StreamingResponse`, whose media
    type is unset, so no JSON 200 is documented beside it."""
    schema = {"type": "string", "format": "binary"}
    return {200: {"description": description, "content": {media_type: {"schema": schema}}}}


def event_stream_response(description: str, *payloads: type[BaseModel]) -> dict[int | str, Any]:
    """`responses=` entry for a 200 of server-sent events whose `data` is the JSON of one of these models. Written as
    FastAPI writes its own SSE routes: `itemSchema` (OpenAPI 3.2) describes one event, and there is no `schema`,
    which would have to describe the whole stream. Use with `response_class=StreamingResponse`."""
    STREAM_PAYLOADS.update((m.__name__, m) for m in payloads)
    data = {"type": "string", "contentMediaType": "application/json",
            "contentSchema": {"anyOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in payloads]}}
    event = {"type": "object", "required": ["data"],
             "properties": {"data": data, "event": {"type": "string"}, "id": {"type": "string"},
                            "retry": {"type": "integer", "minimum": 0}}}
    return {200: {"description": description, "content": {"text/event-stream": {"itemSchema": event}}}}


def operation_id(route: APIRoute) -> str:
    """`list_tasks` -> `listTasks`: the route function's name, in the case generated clients expect."""
    first, *rest = re.split(r"_+", route.name.strip("_"))
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def install_openapi(app: FastAPI) -> None:
    """app.openapi() (and /openapi.json) answers the finished document."""

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = finish_document(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish_document(doc: dict[str, Any]) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _add_model_schemas(schemas)
    scheme = _BEARER.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = scheme
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            # FastAPI's 422 is a 400 here, and any route can answer one: the raw parameters are checked on every
            # route (gateway.raw_params), the query string's unknown names included.
            responses.pop("422", None)
            responses.setdefault("400", _error(ERROR_DESCRIPTIONS[400]))
            if not is_public(path):  # a token is needed, and its scopes may not cover this
                operation["security"] = [{BEARER_SCHEME: []}]
                responses.setdefault("401", _error(ERROR_DESCRIPTIONS[401]))
                responses.setdefault("403", _error(ERROR_DESCRIPTIONS[403]))
            responses.setdefault("default", _error("any other error (500 internal, 504 deadline exceeded), with the "
                                                   "same error JSON"))
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    for schema in schemas.values():
        for field in schema.get("properties", {}).values():
            field.pop("title", None)  # pydantic's "Created At" for created_at: noise in every generated client
    return doc


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _add_model_schemas(schemas: dict[str, Any]) -> None:
    """The request bodies the routes parse themselves (validation mode: what a client sends) and the SSE events
    (serialization mode: what it receives)."""
    models = [(m, "validation") for m in DOCUMENTED_BODIES.values()]
    models += [(m, "serialization") for m in STREAM_PAYLOADS.values()]
    _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    for name, schema in definitions.get("$defs", {}).items():
        if name in DOCUMENTED_BODIES:
            # The routes parse these bodies strictly (gateway/inputs.py): a key the model lacks is a 400.
            schema["additionalProperties"] = False
        schemas.setdefault(name, schema)
