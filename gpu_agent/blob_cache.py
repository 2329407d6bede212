"""The agent's cache of fetched inputs (datasets, published models), keyed by sha256 and bounded in size.

Layout under the cache directory:
    files/<sha256><suffix>   a fetched file (the suffix kept: trainers read `.json` and `.jsonl` differently)
    models/<sha256>/         an archive (a tar of a model directory), unpacked
    partial/<sha256>         a transfer in progress, or one a broken or killed fetch left to resume from
    locks/<sha256>.fetch     held exclusively while one process fetches that blob (a second one waits, then hits)
    locks/<sha256>.use       held shared by every process using that blob; eviction needs it exclusively
    cache.lock               held while making room, so that two fetches do not evict at the same time

The `use` lock is an flock on an inheritable descriptor: it survives the fetch step's exec into the trainer and is
released only when the trainer exits, so a running task's inputs are never evicted. The least recently used entries
(mtime, touched on every use) go first when a new blob needs room.

Filling the cache goes through a `Transfer` (the gRPC client lives in gpu_agent.input_fetch): a broken transfer is
retried with backoff and resumed from the partial file's size; the whole file's sha256 is checked at the end, and a
mismatch deletes the copy and fetches it again from 0.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from trainers.paths import size_text

DEFAULT_MAX_BYTES = 20 * 1024**3
VERIFY_TRIES = 3          # whole fetches whose sha256 does not match before giving up
BREAK_TRIES = 8           # broken transfers (per whole fetch) before giving up
BACKOFF_START = 0.5
BACKOFF_MAX = 8.0
PROGRESS_SECONDS = 5.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = re.compile(r"^(\.[A-Za-z0-9_-]{1,16}){0,2}$")


class CacheError(Exception):
    """A fetch that cannot succeed here; the message is for the task log."""


class TransferBroken(Exception):
    """The transfer stopped before the end (peer gone, stream dropped): worth resuming."""


class TransferRefused(Exception):
    """The source will not give this blob (unknown, not allowed): retrying will not help."""


class Transfer(Protocol):
    def chunks(self, sha256: str, offset: int) -> Iterator[tuple[int, bytes, int]]:
        """(offset, data, total size or 0) from `offset` on; raises TransferBroken or TransferRefused."""
        ...


@dataclass(frozen=True)
class InputSpec:
    ref: str          # what the config names: "dataset:<id>", "task:<id>"
    sha256: str
    size: int = 0     # 0: unknown (then the source's total size counts)
    suffix: str = ""
    archive: bool = False

    def check(self) -> None:
        if not _SHA256.match(self.sha256):
            raise CacheError(f"{self.ref}: sha256 {self.sha256!r} is not 64 lowercase hex digits")
        if not _SUFFIX.match(self.suffix):
            raise CacheError(f"{self.ref}: suffix {self.suffix!r} is not a file suffix like '.jsonl'")


@dataclass
class Held:
    """A cached input in use: `path` stays until `close()` (or the exit of the process the descriptor went to)."""

    spec: InputSpec
    path: Path
    lock_fd: int
    transferred: int  # bytes that came over the network for it (0: a cache hit)

    def close(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024**2):
            digest.update(block)
    return digest.hexdigest()


def _entry_size(path: Path) -> int:
    """Bytes of a cached file or unpacked directory (0 once another process evicted it)."""
    paths = [Path(root) / name for root, _, names in os.walk(path) for name in names] if path.is_dir() else [path]
    total = 0
    for item in paths:
        try:
            total += item.lstat().st_size
        except FileNotFoundError:
            pass
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class BlobCache:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES, say: Callable[[str], None] = print):
        self.root = root
        self.max_bytes = max_bytes
        self.say = say  # where the progress lines go (the task log, or the agent's log for a dry run)
        for name in ("files", "models", "partial", "locks"):
            (root / name).mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- where things are -----------------------------------------------------------------------------------

    def final_path(self, spec: InputSpec) -> Path:
        return self.root / "models" / spec.sha256 if spec.archive else self.root / "files" / (spec.sha256 + spec.suffix)

    def _partial(self, sha256: str) -> Path:
        return self.root / "partial" / sha256

    def _lock_fd(self, sha256: str, kind: str) -> int:
        return os.open(self.root / "locks" / f"{sha256}.{kind}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    # -- the one entry point --------------------------------------------------------------------------------

    def get(self, spec: InputSpec, transfer: Transfer) -> Held:
        """The input's local copy, fetched unless the cache holds it; held (not evictable) until Held.close()."""
        spec.check()
        use_fd = self._lock_fd(spec.sha256, "use")
        try:
            fcntl.flock(use_fd, fcntl.LOCK_SH)  # waits only while an eviction of this very blob runs
            path = self.final_path(spec)
            transferred = 0
            if path.exists():
                self.say(f"{spec.ref}: in the cache (sha256 {spec.sha256})")
            else:
                transferred = self._fill(spec, transfer)
            os.utime(path)  # most recently used
            os.set_inheritable(use_fd, True)  # the trainer the fetch step execs keeps holding it
            return Held(spec, path, use_fd, transferred)
        except BaseException:
            os.close(use_fd)
            raise

    def _fill(self, spec: InputSpec, transfer: Transfer) -> int:
        fetch_fd = self._lock_fd(spec.sha256, "fetch")
        try:
            try:
                fcntl.flock(fetch_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"{spec.ref}: another task is fetching it (sha256 {spec.sha256}); waiting for it")
                fcntl.flock(fetch_fd, fcntl.LOCK_EX)
            if self.final_path(spec).exists():
                self.say(f"{spec.ref}: in the cache (sha256 {spec.sha256}), fetched by another task meanwhile")
                return 0
            transferred = self._download_verified(spec, transfer)
            self._install(spec)
            return transferred
        finally:
            os.close(fetch_fd)  # releases the fetch lock

    # -- fetching ---------------------------------------------------------------------------------------------

    def _download_verified(self, spec: InputSpec, transfer: Transfer) -> int:
        partial = self._partial(spec.sha256)
        transferred = 0
        for attempt in range(1, VERIFY_TRIES + 1):
            transferred += self._download(spec, transfer, partial)
            got = sha256_of(partial)
            if got == spec.sha256:
                self.say(f"{spec.ref}: sha256 verified ({spec.sha256})")
                return transferred
            partial.unlink(missing_ok=True)
            again = "fetching it again from 0" if attempt < VERIFY_TRIES else "giving up"
            self.say(f"{spec.ref}: the copy is corrupt (sha256 {got}, expected {spec.sha256}): refused and "
                     f"deleted; {again} (try {attempt} of {VERIFY_TRIES})")
        raise CacheError(f"{spec.ref}: every copy fetched arrived corrupt ({VERIFY_TRIES} tries); "
                         f"sha256 {spec.sha256} never matched")

    def _download(self, spec: InputSpec, transfer: Transfer, partial: Path) -> int:
        """Brings `partial` to the blob's full size, resuming after breaks; returns the bytes transferred."""
        have = partial.stat().st_size if partial.exists() else 0
        if spec.size and have > spec.size:  # not a prefix of this blob: start over
            partial.unlink()
            have = 0
        expected = spec.size
        if expected and expected > self.max_bytes:
            raise CacheError(f"{spec.ref}: {size_text(expected)} is more than the whole cache may hold "
                             f"({size_text(self.max_bytes)}, BUGAGARIC_AGENT_CACHE_MAX_BYTES)")
        self._make_room(max(0, expected - have), keep=spec.sha256)
        where = f", resuming at {size_text(have)}" if have else ""
        self.say(f"{spec.ref}: fetching {size_text(expected) if expected else 'a blob'} "
                 f"(sha256 {spec.sha256}) from the control plane{where}")
        started, transferred, breaks, delay = time.monotonic(), 0, 0, BACKOFF_START
        while True:
            try:
                moved, broken = self._stream_into(spec, transfer, partial, have)
            except TransferRefused as exc:
                raise CacheError(f"{spec.ref}: the control plane refused it: {exc}") from None
            transferred += moved
            if broken is None:
                break
            have = partial.stat().st_size
            breaks += 1
            if breaks >= BREAK_TRIES:
                raise CacheError(f"{spec.ref}: the transfer broke {breaks} times; last: {broken}")
            if moved:  # it made progress since the last break: back off from the start again
                delay = BACKOFF_START
            self.say(f"{spec.ref}: the transfer broke at {size_text(have)} ({broken}); resuming from offset "
                     f"{have} in {delay:.1f} s")
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        seconds = max(time.monotonic() - started, 1e-6)
        self.say(f"{spec.ref}: fetched {size_text(transferred)} in {seconds:.1f} s "
                 f"({size_text(transferred / seconds)}/s)")
        return transferred

    def _stream_into(self, spec: InputSpec, transfer: Transfer, partial: Path, have: int) -> tuple[int, str | None]:
        """One transfer from `have` on, appended to `partial`: (bytes moved, why it broke or None at the end)."""
        moved, total = 0, spec.size
        last_said = time.monotonic()
        with partial.open("ab") as out:
            try:
                for offset, data, source_total in transfer.chunks(spec.sha256, have):
                    if offset != have + moved:
                        return moved, f"a chunk came for offset {offset}, expected {have + moved}"
                    if source_total and spec.size and source_total != spec.size:
                        raise TransferRefused(f"the blob is {source_total} bytes, the task expected {spec.size}")
                    total = total or source_total
                    if total and have + moved + len(data) > total:
                        return moved, f"more bytes came than the blob's {total}"
                    out.write(data)
                    moved += len(data)
                    if time.monotonic() - last_said >= PROGRESS_SECONDS:
                        last_said = time.monotonic()
                        self._progress(spec, have + moved, total)
            except TransferBroken as exc:
                return moved, str(exc)
        if total and have + moved < total:
            return moved, f"the stream ended at {have + moved} of {total} bytes"
        return moved, None

    def _progress(self, spec: InputSpec, done: int, total: int) -> None:
        if total:
            self.say(f"{spec.ref}: {100 * done / total:.0f}% ({size_text(done)} of {size_text(total)})")
        else:
            self.say(f"{spec.ref}: {size_text(done)}")

    # -- installing -------------------------------------------------------------------------------------------

    def _install(self, spec: InputSpec) -> None:
        partial, final = self._partial(spec.sha256), self.final_path(spec)
        if not spec.archive:
            os.replace(partial, final)
            return
        self._make_room(partial.stat().st_size, keep=spec.sha256)  # the tar and its unpacked files, for a moment
        for leftover in final.parent.glob(f".{spec.sha256}.unpacking-*"):  # of a fetch killed while unpacking
            _remove(leftover)
        unpacking = final.with_name(f".{spec.sha256}.unpacking-{os.getpid()}")
        unpacking.mkdir(mode=0o700)
        try:
            with tarfile.open(partial, "r:") as archive:
                # "data": no absolute names, no members or links leaving the directory, no devices.
                archive.extractall(unpacking, filter="data")
        except (tarfile.TarError, OSError) as exc:
            _remove(unpacking)
            partial.unlink(missing_ok=True)
            raise CacheError(f"{spec.ref}: the archive cannot be unpacked ({exc})") from None
        os.replace(unpacking, final)
        partial.unlink(missing_ok=True)
        self.say(f"{spec.ref}: unpacked into the cache ({size_text(_entry_size(final))})")

    # -- keeping within the limit -----------------------------------------------------------------------------

    def _entries(self) -> list[tuple[float, str, Path]]:
        """(last use, sha256, path) of every cached thing, partial transfers included."""
        found = []
        for folder in ("files", "models", "partial"):
            for path in (self.root / folder).iterdir():
                sha = path.name[:64]
                if not _SHA256.match(sha):
                    continue  # an archive being unpacked, or a stranger
                try:
                    found.append((path.lstat().st_mtime, sha, path))
                except FileNotFoundError:
                    pass
        return sorted(found)

    def _make_room(self, need: int, keep: str) -> None:
        """Evicts least recently used entries nobody holds until `need` more bytes fit."""
        if need <= 0:
            return
        lock_fd = os.open(self.root / "cache.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            entries = [(used, sha, path, _entry_size(path)) for used, sha, path in self._entries()]
            total = sum(size for *_, size in entries)
            for _, sha, path, size in entries:
                if total + need <= self.max_bytes:
                    return
                if sha == keep or not self._evict(sha, path):
                    continue
                total -= size
                self.say(f"cache: evicted {path.parent.name}/{path.name} ({size_text(size)}, least recently used)")
            if total + need > self.max_bytes:
                self.say(f"cache: over its limit of {size_text(self.max_bytes)} ({size_text(total)} held by "
                         f"running tasks, {size_text(need)} more needed); going on")
        finally:
            os.close(lock_fd)

    def _evict(self, sha256: str, path: Path) -> bool:
        use_fd = self._lock_fd(sha256, "use")
        try:
            try:
                fcntl.flock(use_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a running fetch or trainer holds it
            _remove(path)
            return True
        finally:
            os.close(use_fd)
