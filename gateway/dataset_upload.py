"""The dataset upload form (fields `type`, then `file`) turned into UploadDatasetRequests as the body arrives: the
header (file name, type) once `file` starts, then the file's bytes in chunks of about 1 MiB. `type` must come first:
the control plane checks the rows by that type's validator while they stream, before the file has ended."""

from __future__ import annotations

import re
from typing import Protocol

from starlette.requests import Request

from gateway.client import ControlPlane
from gateway.errors import bad_request
from gateway.multipart_stream import Event, MultipartStream, PartData, PartEnd, PartStart
from protos import control_plane_pb2 as cp

TYPE_FIELD, FILE_FIELD = "type", "file"
CHUNK_BYTES = 1024 * 1024
MAX_TYPE_BYTES = 200
MAX_FILENAME_BYTES = 255
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def dataset_file_name(raw: bytes | None) -> str:
    """The uploaded file's name without any directories a browser may send (its suffix tells JSONL from JSON)."""
    if raw is None:
        raise bad_request(f"form field '{FILE_FIELD}' must be a file upload (a part with a filename)", FILE_FIELD)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(f"form field '{FILE_FIELD}': the file name is not valid UTF-8", FILE_FIELD) from None
    name = re.split(r"[/\\]", text)[-1].strip()
    if not name or name in (".", ".."):
        raise bad_request(f"form field '{FILE_FIELD}': the file needs a name (e.g. train.jsonl)", FILE_FIELD)
    if _CONTROL.search(name) or len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        raise bad_request(f"form field '{FILE_FIELD}': the file name must be at most {MAX_FILENAME_BYTES} bytes of "
                          "printable text", FILE_FIELD)
    return name


class DatasetUploadForm:
    """feed() each body chunk and send what it returns, in order; finish() at the end of the body. Both raise
    ApiError(400) naming the field at fault as soon as the form breaks its rules."""

    def __init__(self, content_type: str | None) -> None:
        self._parts = MultipartStream(content_type)
        self._part: str | None = None
        self._type = bytearray()
        self._seen: set[str] = set()
        self._pending = bytearray()  # file bytes not yet sent: less than one chunk between feeds

    def feed(self, chunk: bytes) -> list[cp.UploadDatasetRequest]:
        return self._handle(self._parts.feed(chunk))

    def finish(self) -> list[cp.UploadDatasetRequest]:
        messages = self._handle(self._parts.close())
        for field in (TYPE_FIELD, FILE_FIELD):
            if field not in self._seen:
                raise bad_request(f"form field '{field}' is missing", field)
        return messages

    def _handle(self, events: list[Event]) -> list[cp.UploadDatasetRequest]:
        messages: list[cp.UploadDatasetRequest] = []
        for event in events:
            if isinstance(event, PartStart):
                messages.extend(self._start(event))
            elif isinstance(event, PartData):
                self._data(event.data, messages)
            elif isinstance(event, PartEnd) and event.name == FILE_FIELD:
                if self._pending:
                    messages.append(cp.UploadDatasetRequest(data=bytes(self._pending)))
                    self._pending.clear()
        return messages

    def _start(self, part: PartStart) -> list[cp.UploadDatasetRequest]:
        if part.name not in (TYPE_FIELD, FILE_FIELD):
            raise bad_request(f"unknown form field {part.name!r}; allowed: {TYPE_FIELD}, {FILE_FIELD}", part.name)
        if part.name in self._seen:
            raise bad_request(f"form field '{part.name}' is given twice", part.name)
        self._seen.add(part.name)
        self._part = part.name
        if part.name == TYPE_FIELD:
            return []
        if TYPE_FIELD not in self._seen:
            raise bad_request(f"form field '{TYPE_FIELD}' must come before '{FILE_FIELD}': the rows are checked by the "
                              "type's validator as they arrive", TYPE_FIELD)
        header = cp.DatasetHeader(name=dataset_file_name(part.filename), type=self._task_type())
        return [cp.UploadDatasetRequest(header=header)]

    def _data(self, data: bytes, messages: list[cp.UploadDatasetRequest]) -> None:
        if self._part == TYPE_FIELD:
            self._type.extend(data)
            if len(self._type) > MAX_TYPE_BYTES:
                raise bad_request(f"form field '{TYPE_FIELD}' is longer than {MAX_TYPE_BYTES} bytes", TYPE_FIELD)
            return
        self._pending.extend(data)
        while len(self._pending) >= CHUNK_BYTES:
            messages.append(cp.UploadDatasetRequest(data=bytes(self._pending[:CHUNK_BYTES])))
            del self._pending[:CHUNK_BYTES]

    def _task_type(self) -> str:
        try:
            text = self._type.decode("utf-8").strip()
        except UnicodeDecodeError:
            text = ""
        if not text or _CONTROL.search(text):
            raise bad_request(f"form field '{TYPE_FIELD}' must be a task type such as sft, dpo, embedding or kbalign",
                              TYPE_FIELD)
        return text


class UploadForm(Protocol):
    """A multipart form turned into UploadDatasetRequests as its bytes arrive (DatasetUploadForm here, the OpenAI
    files route's FileUploadForm)."""

    def feed(self, chunk: bytes) -> list[cp.UploadDatasetRequest]: ...

    def finish(self) -> list[cp.UploadDatasetRequest]: ...


async def relay_upload(request: Request, call: ControlPlane, form: UploadForm) -> cp.Dataset:
    """Streams the request's form into UploadDataset as the body arrives and returns the stored dataset. The call is
    opened at the form's first message (its header), so a form refused before its file makes none; a body that breaks
    off or is refused leaves the call cancelled and nothing kept. AioRpcError and ClientDisconnect are the caller's to
    map (the REST and the OpenAI routes answer them in their own error shapes)."""
    upload = None

    async def send(messages: list[cp.UploadDatasetRequest]) -> None:
        nonlocal upload
        for message in messages:
            upload = upload or call.upload("UploadDataset")
            await upload.write(message)

    try:
        async for chunk in request.stream():
            await send(form.feed(chunk))
        await send(form.finish())  # raises unless the form had its file, so the call is open
        return await upload.finish()
    finally:
        if upload is not None:
            upload.cancel()  # a no-op once answered
