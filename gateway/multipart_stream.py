"""An incremental multipart/form-data reader: fed the request body as it arrives, it hands back the parts as events
(a part's start with its name and file name, pieces of its data, its end, the form's end), so a large upload passes
through without ever being held whole. The byte-level parsing is python-multipart's streaming parser; every way a
body can be malformed is an ApiError(400)."""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.errors import bad_request

# RFC 2046: a boundary is 1 to 70 characters.
MAX_BOUNDARY_LENGTH = 70
_NOT_MULTIPART = "request body must be multipart/form-data (Content-Type: multipart/form-data; boundary=...)"


@dataclass(frozen=True)
class PartStart:
    name: str
    filename: bytes | None  # as sent (UTF-8 by convention); None: a plain field, not a file


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    name: str


@dataclass(frozen=True)
class FormEnd:
    pass


Event = PartStart | PartData | PartEnd | FormEnd


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type header, or ApiError(400)."""
    media_type, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary", b"")
    if media_type != b"multipart/form-data" or not boundary:
        raise bad_request(_NOT_MULTIPART)
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise bad_request(f"multipart boundary is longer than {MAX_BOUNDARY_LENGTH} characters")
    return boundary


def _text(raw: bytes) -> str:
    # Browsers and curl send names as UTF-8; a name that is not is only ever echoed in a message.
    return raw.decode("utf-8", "backslashreplace")


class MultipartStream:
    """feed() the body's chunks in order, then close(). Each returns the events the bytes so far completed."""

    def __init__(self, content_type: str | None) -> None:
        self._events: list[Event] = []
        self._headers: dict[str, str] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._part: str | None = None
        self.ended = False
        self._parser = MultipartParser(boundary_of(content_type), {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": lambda data, start, end: self._events.append(PartData(bytes(data[start:end]))),
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        })

    def feed(self, chunk: bytes) -> list[Event]:
        if chunk and not self.ended:  # an epilogue after the closing boundary is ignored, as RFC 2046 says
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise bad_request(f"request body is not valid multipart/form-data: {exc}") from None
        events, self._events = self._events, []
        return events

    def close(self) -> list[Event]:
        """The body has ended: it must have ended the form (python-multipart's finalize does not check)."""
        if not self.ended:
            raise bad_request("request body ended before the closing boundary of the multipart/form-data form")
        return self.feed(b"")

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).decode("latin-1").strip().lower()] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise bad_request("every part of a multipart/form-data body needs 'Content-Disposition: form-data; name=...'")
        self._part = _text(options[b"name"])
        filename = options.get(b"filename")
        self._events.append(PartStart(self._part, filename))

    def _on_part_end(self) -> None:
        if self._part is not None:
            self._events.append(PartEnd(self._part))
            self._part = None

    def _on_end(self) -> None:
        self.ended = True
        self._events.append(FormEnd())
