"""Reads a KBAlign input and cuts it into chunks. Cheap to import (no torch): the control plane validates with it.

Input forms (`input_path`: an uploaded dataset `dataset:<id>`, or a path on the agent relative to its workspace):
- a JSONL file of chunks `{"text": ..., "title"?: ..., "id"?: ...}` (a bare JSON string per line is a text too);
- a `.json` file holding a list of strings (or of `{"text": ...}` objects);
- a folder of `.txt` / `.md` files, read recursively in sorted path order (one document per file);
- a single `.txt` / `.md` file (one document);
- a JSONL file of already annotated chat rows `{"messages": [...]}`: the annotation stage is skipped.

An uploaded dataset is one JSONL or `.json` file, checked row by row by `kb_rows` (the type's `row_parser`).

Long documents are cut into chunks of at most `chunk_size` characters, with `chunk_overlap` characters repeated
between neighbours; a cut prefers a paragraph, line, sentence or word boundary in the chunk's second half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainers.common.jsonl import RowChecker, load_rows
from trainers.errors import DataError
from trainers.paths import check_regular_file, limits, policy, readable, shown

FIELD = "input_path"
TEXT_SUFFIXES = (".txt", ".md")

InputKind = Literal["jsonl", "json", "folder", "text_file", "chat"]


@dataclass
class Chunk:
    id: str
    text: str
    source: str  # the file it came from
    title: str | None = None


@dataclass
class KnowledgeBase:
    kind: InputKind
    path: str
    documents: int
    chunks: list[Chunk] = field(default_factory=list)
    chat_rows: list[Any] = field(default_factory=list)  # trainers.sft.spec.ChatRow when kind == "chat"
    chat_lines: list[int] = field(default_factory=list)  # the line of each chat row, for messages

    @property
    def annotated(self) -> bool:
        return self.kind == "chat"

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input_kind": self.kind, "documents": self.documents}
        if self.annotated:
            out["chat_rows"] = len(self.chat_rows)
        else:
            out["chunks"] = len(self.chunks)
        return out


class KBRow(BaseModel):
    """One knowledge-base chunk/document. Extra keys are the user's business and ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    text: str = Field(min_length=1)
    title: str | None = None
    id: str | int | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty (only whitespace)")
        return value


# --- chunking ------------------------------------------------------------------------------------------------------

_BOUNDARIES = ("\n\n", "\n", ". ", "。", "! ", "? ", "！", "？", "; ", "；", " ")


def chunk_text(text: str, size: int, overlap: int = 0) -> list[str]:
    """Cuts `text` into pieces of at most `size` characters; neighbours share about `overlap` characters."""
    text = text.strip()
    if not text:
        return []
    if len(text) <= size:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            window = text[start:end]
            for sep in _BOUNDARIES:
                pos = window.rfind(sep)
                if pos >= size // 2:
                    end = start + pos + len(sep)
                    break
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        if end >= len(text):
            break
        nxt = end - overlap
        if overlap and start < nxt < end:
            space = text.find(" ", nxt, end)  # start the overlap at a word, not inside one
            if space != -1:
                nxt = space + 1
        start = max(nxt, start + 1)
    return pieces


def _chunks_of(doc_id: str, text: str, source: str, title: str | None, size: int, overlap: int) -> list[Chunk]:
    pieces = chunk_text(text, size, overlap)
    if len(pieces) == 1:
        return [Chunk(doc_id, pieces[0], source, title)]
    return [Chunk(f"{doc_id}#{i}", piece, source, title) for i, piece in enumerate(pieces, start=1)]


# --- loading -------------------------------------------------------------------------------------------------------

def kb_rows() -> RowChecker:
    """A fresh checker of one KBAlign input file (the type's `row_parser`): KB rows (or bare strings) or chat rows,
    one kind per file (the first row decides, hence a fresh one per file). Counts text_rows and chat_rows."""
    from trainers.sft.spec import ChatRow

    state: dict[str, str] = {}

    def parse(raw: Any):
        if isinstance(raw, str):
            raw = {"text": raw}
        if not isinstance(raw, dict):
            raise ValueError(f"row must be a JSON object with a \"text\" (or a string), got {type(raw).__name__}")
        kind = "chat" if "messages" in raw else "text"
        first = state.setdefault("kind", kind)
        if kind != first:
            raise ValueError("mixes chat rows ({\"messages\": ...}) and knowledge-base rows ({\"text\": ...}); "
                             "use one kind per file")
        return ChatRow.model_validate(raw) if kind == "chat" else KBRow.model_validate(raw)

    def count(stats: dict[str, int], row: Any) -> None:
        stats["text_rows" if isinstance(row, KBRow) else "chat_rows"] += 1

    return RowChecker(parse, {"text_rows": 0, "chat_rows": 0}, count)


def _read_text_file(path: Path, name: str) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(FIELD, f"{FIELD}: {name} line {line}: not valid UTF-8 ({exc.reason})") from None
    if not text.strip():
        raise DataError(FIELD, f"{FIELD}: {name} is empty (no text)")
    return text


def _folder_files(folder: Path, workspace: Path | None) -> list[tuple[Path, str]]:
    """The folder's .txt/.md files (resolved, each one checked: a symlink out of the data roots is refused), with the
    name shown in messages; their total size is held to the data-file limit."""
    found: list[tuple[Path, str]] = []
    total, limit = 0, limits().max_file_bytes
    for file in sorted(p for p in folder.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file()):
        name = f"{folder.name}/{file.relative_to(folder).as_posix()}"
        resolved = readable(file, FIELD, workspace, error=DataError)
        check_regular_file(resolved, FIELD, name)
        total += resolved.stat().st_size
        if total > limit:
            raise DataError(FIELD, f"{FIELD}: the files of folder {folder.name} hold more than {limit} bytes, the "
                                   "limit of one input (BUGAGARIC_MAX_DATA_FILE_BYTES)")
        found.append((resolved, name))
    return found


def load_kb(path_value: str, chunk_size: int, chunk_overlap: int, workspace: Path | None = None) -> KnowledgeBase:
    """Reads and chunks the knowledge base; raises DataError naming the file (and line) that is wrong."""
    path = readable(path_value, FIELD, workspace, error=DataError)
    shown_name = shown(path, policy(workspace).workspace)

    if path.is_dir():
        files = _folder_files(path, workspace)
        if not files:
            raise DataError(FIELD, f"{FIELD}: folder {shown_name} holds no .txt or .md files")
        chunks: list[Chunk] = []
        for file, name in files:
            rel = name.split("/", 1)[1]
            chunks += _chunks_of(rel, _read_text_file(file, name), str(file), Path(rel).stem, chunk_size, chunk_overlap)
        return KnowledgeBase("folder", str(path), len(files), chunks)

    if path.suffix.lower() in TEXT_SUFFIXES:
        check_regular_file(path, FIELD, str(path_value))
        chunks = _chunks_of(path.name, _read_text_file(path, shown_name), str(path), path.stem, chunk_size,
                            chunk_overlap)
        return KnowledgeBase("text_file", str(path), 1, chunks)

    # The value as given, so a dataset ref is named as such (and found through the agent's fetched inputs).
    rows, report = load_rows(path_value, kb_rows(), field=FIELD, workspace=workspace)
    if isinstance(rows[0], KBRow):
        chunks = []
        for number, row in enumerate(rows, start=1):
            doc_id = str(row.id) if row.id is not None else f"{path.name}:{number}"
            chunks += _chunks_of(doc_id, row.text, str(path), row.title, chunk_size, chunk_overlap)
        kind: InputKind = "json" if path.suffix.lower() == ".json" else "jsonl"
        return KnowledgeBase(kind, report.path, len(rows), chunks)
    lines = report.lines if len(report.lines) == len(rows) else list(range(1, len(rows) + 1))
    return KnowledgeBase("chat", report.path, len(rows), chat_rows=rows, chat_lines=lines)


def sample_evenly(n: int, budget: int) -> list[int]:
    """Indices of at most `budget` of n items spread evenly over all of them (every item when n <= budget): a
    knowledge base larger than the annotation budget is annotated across its whole length, not just its start."""
    if n <= budget:
        return list(range(n))
    return [int(i * n / budget) for i in range(budget)]


def digest(chunks: list[Chunk]) -> str:
    """A fingerprint of the chunks (ids and texts, in order): a resumed run must see the same knowledge base."""
    import hashlib

    h = hashlib.sha256()
    for chunk in chunks:
        for text in (chunk.id, chunk.text):
            h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]
