"""What a JSON document crossing the platform may hold: the one decoder for request bodies (gateway) and task
configs (control plane, for gRPC clients that never pass the gateway).

Python's json accepts more than the control plane, its database or an answer can hold: lone surrogates ("\\ud800",
which cannot be encoded as UTF-8), NUL characters (which PostgreSQL text refuses), NaN and Infinity literals,
integers past Python's digit limit, and nesting deep enough to exhaust the interpreter's recursion limit. Each is a
JsonProblem naming the value's dotted path (`config.foo`, `username`), or for too deep a document the top-level key
it is under.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

# Deeper than any config needs, and far from the interpreter's recursion limit (json's decoder recurses).
MAX_DEPTH = 64

_BAD_CHARACTER = re.compile("[\ud800-\udfff\x00]")
# Strings (skipped whole, escapes included) and the brackets outside them: enough to measure nesting without parsing.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')

Path = tuple[str | int, ...]


class JsonProblem(ValueError):
    """Not a document the platform takes. `field` is the dotted path of the value at fault (None: the whole)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class _Unrepresentable:
    """Stands in for a literal with no finite Python value (NaN, Infinity, an integer of too many digits), so that
    the check below can say where it was."""

    def __init__(self, literal: str) -> None:
        self.literal = literal if len(literal) <= 24 else f"a number of {len(literal)} characters"


def _parse_int(literal: str) -> int | _Unrepresentable:
    try:
        return int(literal)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return _Unrepresentable(literal)


def loads(raw: bytes | str, what: str = "request body") -> Any:
    """The decoded document, or JsonProblem. `what` names it in messages."""
    try:
        value = json.loads(raw, parse_constant=_Unrepresentable, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise JsonProblem(f"{what} is not valid JSON: {e.msg}: line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise JsonProblem(f"{what} is not valid UTF-8 JSON: {e.reason} at byte {e.start}") from None
    except RecursionError:  # json's decoder recurses per level: thousands of them exhaust the interpreter's limit
        raise _too_deep(what, _key_of_deepest(raw)) from None
    _check(value, (), what)
    return value


def _too_deep(what: str, field: str | None) -> JsonProblem:
    return JsonProblem(f"{what} is nested more than {MAX_DEPTH} levels deep", field)


def _key_of_deepest(raw: bytes | str) -> str | None:
    """The top-level key under which the nesting first goes past MAX_DEPTH, found by a scan of the text (there is
    no decoded value to walk); None when the document is not an object."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    depth, top_is_object, key = 0, False, None
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token[0] == '"':
            if depth == 1:
                key = token  # the last string at depth 1 before a bracket opens is that value's key
        elif token in "[{":
            top_is_object = top_is_object or (depth == 0 and token == "{")
            depth += 1
            if depth > MAX_DEPTH:
                return _decode_key(key) if top_is_object else None
        else:
            depth -= 1
    return None


def _decode_key(token: str | None) -> str | None:
    try:
        key = json.loads(token) if token else None
    except ValueError:
        return None
    return key if isinstance(key, str) and not _BAD_CHARACTER.search(key) else None


def _dotted(path: Path) -> str | None:
    return ".".join(str(p) for p in path) or None


def _where(path: Path, what: str) -> str:
    return f"'{_dotted(path)}'" if path else what


def _check(value: Any, path: Path, what: str, depth: int = 1) -> None:
    if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
        raise _too_deep(what, path[0] if path and isinstance(path[0], str) else None)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, (*path, key), "key", what)
            _check(item, (*path, key), what, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, (*path, index), what, depth + 1)
    elif isinstance(value, str):
        _check_text(value, path, "string", what)
    elif isinstance(value, _Unrepresentable):
        raise JsonProblem(
            f"{_where(path, what)}: {value.literal} is not a number the API takes (finite, at most "
            f"{sys.get_int_max_str_digits()} digits)", _dotted(path),
        )
    elif isinstance(value, float) and not math.isfinite(value):  # e.g. 1e999
        raise JsonProblem(f"{_where(path, what)}: number out of range", _dotted(path))


def _check_text(text: str, path: Path, kind: str, what: str) -> None:
    bad = _BAD_CHARACTER.search(text)
    if bad:
        name = "a NUL character" if bad.group() == "\x00" else "a lone UTF-16 surrogate"
        # The path itself may hold the bad character: shown escaped, so the message is sendable text.
        where = _where(path, what).encode("utf-8", "backslashreplace").decode("utf-8")
        field = (_dotted(path) or "").encode("utf-8", "backslashreplace").decode("utf-8") or None
        raise JsonProblem(f"{where}: the {kind} contains {name} (\\u{ord(bad.group()):04x})", field)
