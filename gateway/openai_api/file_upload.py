"""The /v1/files upload form (fields `purpose` and `file`, in any order) turned into UploadDatasetRequests as the
body arrives. An OpenAI file carries no task type, a dataset does: the type is told by the file's first row, which is
held back until it is complete (at most HEAD_BYTES): OpenAI preference rows (`preferred_output` /
`non_preferred_output`) are dpo data, anything else sft data (chat rows `{"messages": [...]}`, or the seed's rows).
Every row is then checked by that type's validator on the control plane, as any upload is."""

from __future__ import annotations

import json

from gateway.dataset_upload import CHUNK_BYTES, dataset_file_name
from gateway.multipart_stream import Event, MultipartStream, PartData, PartEnd, PartStart
from gateway.openai_api.errors import invalid_request
from protos import control_plane_pb2 as cp

PURPOSE_FIELD, FILE_FIELD = "purpose", "file"
FINE_TUNE = "fine-tune"
HEAD_BYTES = 1024 * 1024
MAX_PURPOSE_BYTES = 100
_PREFERENCE_KEYS = ("preferred_output", "non_preferred_output")


def task_type_of(head: bytes) -> str:
    """sft or dpo, from the start of the file (its first complete line, or HEAD_BYTES of it)."""
    first = next((line for line in head.splitlines() if line.strip()), b"")
    try:
        row = json.loads(first)
    except ValueError:
        row = None
    if isinstance(row, dict):
        return "dpo" if any(key in row for key in _PREFERENCE_KEYS) else "sft"
    # Not one JSON object on the first line (e.g. a .json list): look for the keys themselves.
    return "dpo" if any(f'"{key}"'.encode() in head for key in _PREFERENCE_KEYS) else "sft"


class FileUploadForm:
    """feed() each body chunk and send what it returns, in order; finish() at the end of the body. Both raise
    OpenAIError(400) naming the param at fault."""

    def __init__(self, content_type: str | None) -> None:
        self._parts = MultipartStream(content_type)
        self._part: str | None = None
        self._seen: set[str] = set()
        self._purpose = bytearray()
        self._name = ""
        self._head: bytearray | None = None  # the file's bytes until its type is known; None once sent
        self._pending = bytearray()
        self.task_type = ""

    @property
    def filename(self) -> str:
        return self._name

    def feed(self, chunk: bytes) -> list[cp.UploadDatasetRequest]:
        return self._handle(self._parts.feed(chunk))

    def finish(self) -> list[cp.UploadDatasetRequest]:
        messages = self._handle(self._parts.close())
        if FILE_FIELD not in self._seen:
            raise invalid_request("form field 'file' is missing", FILE_FIELD, "missing_required_parameter")
        self.check_purpose()
        return messages

    def check_purpose(self) -> None:
        purpose = self._purpose.decode("utf-8", "replace").strip()
        if PURPOSE_FIELD not in self._seen or not purpose:
            raise invalid_request("form field 'purpose' is missing: use purpose='fine-tune'", PURPOSE_FIELD,
                                  "missing_required_parameter")
        if purpose != FINE_TUNE:
            raise invalid_request(f"purpose {purpose[:40]!r} is not supported here: files are training data, "
                                  f"purpose '{FINE_TUNE}'", PURPOSE_FIELD)

    def _handle(self, events: list[Event]) -> list[cp.UploadDatasetRequest]:
        messages: list[cp.UploadDatasetRequest] = []
        for event in events:
            if isinstance(event, PartStart):
                self._start(event)
            elif isinstance(event, PartData):
                self._data(event.data, messages)
            elif isinstance(event, PartEnd):
                if event.name == PURPOSE_FIELD:
                    self.check_purpose()
                elif event.name == FILE_FIELD:
                    self._release(messages, final=True)
        return messages

    def _start(self, part: PartStart) -> None:
        if part.name not in (PURPOSE_FIELD, FILE_FIELD):
            raise invalid_request(f"unknown form field {part.name!r}; allowed: {PURPOSE_FIELD}, {FILE_FIELD}",
                                  part.name)
        if part.name in self._seen:
            raise invalid_request(f"form field '{part.name}' is given twice", part.name)
        self._seen.add(part.name)
        self._part = part.name
        if part.name == FILE_FIELD:
            self._name = dataset_file_name(part.filename)
            self._head = bytearray()

    def _data(self, data: bytes, messages: list[cp.UploadDatasetRequest]) -> None:
        if self._part == PURPOSE_FIELD:
            self._purpose.extend(data)
            if len(self._purpose) > MAX_PURPOSE_BYTES:
                raise invalid_request(f"form field 'purpose' is longer than {MAX_PURPOSE_BYTES} bytes", PURPOSE_FIELD)
            return
        if self._head is not None:
            self._head.extend(data)
            if b"\n" in self._head.lstrip() or len(self._head) >= HEAD_BYTES:
                self._release(messages)
            return
        self._pending.extend(data)
        self._flush(messages)

    def _release(self, messages: list[cp.UploadDatasetRequest], *, final: bool = False) -> None:
        """The header (name, type from the head), then the held-back head; at the file's end, what is left."""
        if self._head is not None:
            self.task_type = task_type_of(bytes(self._head))
            messages.append(cp.UploadDatasetRequest(header=cp.DatasetHeader(name=self._name, type=self.task_type)))
            self._pending.extend(self._head)
            self._head = None
        self._flush(messages, final=final)

    def _flush(self, messages: list[cp.UploadDatasetRequest], *, final: bool = False) -> None:
        while len(self._pending) >= CHUNK_BYTES or (final and self._pending):
            messages.append(cp.UploadDatasetRequest(data=bytes(self._pending[:CHUNK_BYTES])))
            del self._pending[:CHUNK_BYTES]
