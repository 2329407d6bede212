"""Uploads and downloads with a rich progress bar, streamed: a file is never held whole in memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from cli.api import Api
from cli.errors import EXIT_REFUSED, CliError

DOWNLOAD_CHUNK_BYTES = 1 << 20


def transfer_bar(console: Console) -> Progress:
    # disable on a non-terminal: a pipe or CI log gets no bar frames, only the command's own result lines
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, disable=not console.is_terminal)


class ReadProgress:
    """A binary file whose reads advance a progress bar; httpx's multipart encoder reads it chunk by chunk (and
    learns its size through fileno/seek/tell, for the Content-Length)."""

    def __init__(self, file: IO[bytes], bar: Progress, bar_task: TaskID) -> None:
        self._file, self._bar, self._bar_task = file, bar, bar_task

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._bar.advance(self._bar_task, len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        if whence == os.SEEK_SET and offset == 0:
            self._bar.reset(self._bar_task)  # the encoder starts over from the beginning
        return position

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


def upload_file(api: Api, path: str, file: Path, fields: dict[str, str], console: Console) -> Any:
    """POSTs `fields` then the file as multipart/form-data (fields first: the gateway needs `type` before `file`)."""
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}", EXIT_REFUSED, "file") from None
    with handle, transfer_bar(console) as bar:
        bar_task = bar.add_task(f"uploading {file.name}", total=os.fstat(handle.fileno()).st_size)
        reader = ReadProgress(handle, bar, bar_task)
        return api.post(path, data=fields, files={"file": (file.name, reader, "application/octet-stream")},
                        timeout=None)  # as long as the upload and its row checks take


def download(api: Api, path: str, destination: Path, total: int | None, console: Console) -> int:
    """Streams the answer into `destination` (through a `.part` file renamed at the end, so a download that breaks
    off never leaves a file that looks whole). Returns the bytes written."""
    partial = destination.with_name(destination.name + ".part")
    written = 0
    try:
        with api.stream("GET", path, timeout=None) as response, transfer_bar(console) as bar:
            length = response.headers.get("content-length")
            bar_task = bar.add_task(f"downloading {destination.name}",
                                    total=int(length) if length and length.isdigit() else total)
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    out.write(chunk)
                    written += len(chunk)
                    bar.advance(bar_task, len(chunk))
        os.replace(partial, destination)
    except OSError as exc:
        raise CliError(f"cannot write {partial}: {exc.strerror or exc}", EXIT_REFUSED, "output") from None
    finally:
        partial.unlink(missing_ok=True)
    return written
