"""Checks of the path and query parameters as the client sent them, before FastAPI converts them.

ASGI servers decode percent-escapes leniently: invalid UTF-8 such as `%ED%A0%80` (an encoded surrogate) becomes
U+FFFD, or with other servers a lone surrogate that protobuf cannot encode. Control characters are refused too (no
id, name or filter holds one; PostgreSQL refuses NUL). A bearer token in the query (`access_token`) is refused: URLs
end up in access logs and browser history; it belongs in the Authorization header.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

from fastapi import Request

from gateway.errors import bad_request

TOKEN_QUERY_PARAMETER = "access_token"
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def check_raw_parameters(request: Request) -> None:
    """App-wide dependency: runs after routing, before the route's own parameters are validated."""
    for raw_name, raw_value in _query_pairs(request.scope.get("query_string", b"")):
        name = raw_name.decode("utf-8", "backslashreplace")
        _check("query", name, raw_name)  # a bad name is as bad as a bad value
        if name == TOKEN_QUERY_PARAMETER:
            raise bad_request(
                "a token in the URL is refused (URLs are logged): send it in the header 'Authorization: Bearer <token>'",
                TOKEN_QUERY_PARAMETER,
            )
        _check("query", name, raw_value)
    route = request.scope.get("route")
    if route is not None:
        # Without raw_path (it is optional in ASGI), the decoded path re-encoded; a surrogate stays invalid UTF-8.
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode("utf-8", "surrogatepass")
        for name, raw in _path_pairs(route.path, raw_path, request.scope.get("root_path", "")):
            _check("path", name, raw)


def _check(where: str, name: str, raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(f"{where} parameter '{name}' is not valid UTF-8 text", name) from None
    if _CONTROL.search(text):
        raise bad_request(f"{where} parameter '{name}' contains a control character", name)


def _query_pairs(query_string: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(name, value) bytes, unescaped as application/x-www-form-urlencoded (and starlette) define it."""
    for part in query_string.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            yield unquote_to_bytes(name.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" "))


def _path_pairs(template: str, raw_path: bytes, root_path: str = "") -> Iterator[tuple[str, bytes]]:
    """(parameter name, raw bytes) for each `{param}` segment of the route's path template. Aligned from the end,
    so a root_path before the app's paths does not matter; a `{name:path}` parameter spans '/', so with one the
    segments before it align from the start of the path after root_path, and it takes everything in between."""
    segments, raw = template.split("/"), raw_path.split(b"/")
    spanning = next((i for i, s in enumerate(segments) if s.endswith(":path}")), None)
    if spanning is None:
        pairs = list(zip(reversed(segments), reversed(raw)))
    else:
        root = root_path.rstrip("/").encode("utf-8", "surrogatepass")
        if root and raw_path.startswith(root):
            raw = raw_path[len(root):].split(b"/")
        end = len(raw) - (len(segments) - spanning - 1)  # where the segments after the spanning one start
        yield _name(segments[spanning]), unquote_to_bytes(b"/".join(raw[spanning:end]))
        pairs = [*zip(segments[:spanning], raw[:spanning]), *zip(segments[spanning + 1:], raw[end:])]
    for segment, part in pairs:
        if segment.startswith("{") and segment.endswith("}"):
            yield _name(segment), unquote_to_bytes(part)


def _name(segment: str) -> str:
    return segment[1:-1].partition(":")[0]
