"""Decoding a JSON request body into plain, storable values, or a 400 naming where it is wrong (the rules are
protos.json_values', shared with the control plane)."""

from __future__ import annotations

from typing import Any

from gateway.errors import bad_request
from protos.json_values import JsonProblem, loads


def load_json(raw: bytes) -> Any:
    """The decoded body, or ApiError(400)."""
    try:
        return loads(raw)
    except JsonProblem as problem:
        raise bad_request(problem.message, problem.field) from None
