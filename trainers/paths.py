"""Where the paths in a task config may point, and how large and slow reading a data file may be.

Every path a user gives (data, eval data, the KBAlign input, `config_file`, a local base model, `output_dir`, a resume
checkpoint) is resolved with symlinks followed and must land inside the roots the operator configured:

- reading: the data roots (`BUGAGARIC_DATA_ROOTS`, default: the workspace), plus for base models
  `BUGAGARIC_MODEL_ROOTS`, plus for admins' tasks `BUGAGARIC_ADMIN_PATH_ROOTS`;
- writing: the output root (`BUGAGARIC_OUTPUT_ROOT`, default `<workspace>/output`), in a directory per task that no
  other task may name (see `trainers.output_dirs`);
- never: the platform's own state (`BUGAGARIC_STATE_DIR`, default `<workspace>/var`: the store, tokens, the admin
  password, service logs, the agent's task directories), whatever the roots say.

Inside the output root, a path is readable only within tasks of the same owner (admins: any): one user cannot train
on, or resume from, another user's outputs.

A platform object stands where a path may: `dataset:<id>` (an uploaded dataset) or `task:<id>` (a task's published
model). The control plane checks that the caller may use it; the agent fetches it into its cache before the trainer
starts and hands the trainer the local copies in `BUGAGARIC_INPUT_FILES` (`input_path`). A user cannot name the cache
by path: it lies in the platform's state directory.

Who a check is for (owner, admin or not) comes from `BUGAGARIC_TASK_OWNER` / `BUGAGARIC_PATH_SCOPE`, which the agent
sets for a trainer and the control plane for its checks, or from `scope()` in a worker that checks for many owners.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from trainers.errors import ConfigError, DataError

GiB = 1024**3
MiB = 1024**2
DEFAULT_MAX_DATA_FILE_BYTES = 2 * GiB
DEFAULT_MAX_ROW_BYTES = 16 * MiB
DEFAULT_MAX_READ_SECONDS = 900.0
# The marker a trainer leaves in its task's output directory: which task, whose.
TASK_MARKER = ".bugagaric-task.json"

Kind = Literal["data", "model"]
# Set by the agent for a trainer or dry run: a JSON object {ref: local path} of the inputs it fetched.
INPUTS_ENV = "BUGAGARIC_INPUT_FILES"
REF_PREFIXES = ("dataset:", "task:")


def is_ref(value: object) -> bool:
    """Whether a config value names a platform object (`dataset:<id>`, `task:<id>`) rather than a path."""
    return isinstance(value, str) and value.startswith(REF_PREFIXES) and len(value.split(":", 1)[1]) > 0


def input_path(ref: str, field: str, *, error: type[ConfigError] = ConfigError) -> Path:
    """The local copy of `ref` that the agent fetched for this task, or `error` naming `field`."""
    try:
        files = json.loads(os.environ.get(INPUTS_ENV) or "{}")
    except ValueError:
        files = {}
    local = files.get(ref) if isinstance(files, dict) else None
    if not local:
        raise error(field, f"{field}: {ref} was not fetched onto this host (is it one of your datasets?)")
    return Path(local)


def workspace() -> Path:
    return Path(os.environ.get("BUGAGARIC_WORKSPACE") or os.getcwd()).resolve()


def resolve(path: str | os.PathLike[str], base: Path | None = None) -> Path:
    """An absolute path stays; a relative one is taken under `base` (default: the workspace). `~` expands.
    Not a permission check: `readable` and `trainers.output_dirs` are."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    return (base or workspace()) / candidate


@dataclass(frozen=True)
class Scope:
    """Whom a path check is for."""

    owner: str = ""
    admin: bool = False


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("path_scope", default=None)


def current_scope() -> Scope:
    explicit = _scope.get()
    if explicit is not None:
        return explicit
    return Scope(os.environ.get("BUGAGARIC_TASK_OWNER", ""), os.environ.get("BUGAGARIC_PATH_SCOPE", "") == "admin")


@contextlib.contextmanager
def scope(owner: str, admin: bool) -> Iterator[None]:
    """Checks inside the block are made for this owner (a worker process checking submissions of many users)."""
    token = _scope.set(Scope(owner, admin))
    try:
        yield
    finally:
        _scope.reset(token)


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_row_bytes: int
    max_read_seconds: float


def limits() -> Limits:
    return Limits(
        _env_number("BUGAGARIC_MAX_DATA_FILE_BYTES", DEFAULT_MAX_DATA_FILE_BYTES, int),
        _env_number("BUGAGARIC_MAX_ROW_BYTES", DEFAULT_MAX_ROW_BYTES, int),
        _env_number("BUGAGARIC_MAX_DATA_READ_SECONDS", DEFAULT_MAX_READ_SECONDS, float),
    )


def _env_number(name: str, default, kind):
    raw = os.environ.get(name, "").strip()
    return kind(raw) if raw else default


@dataclass(frozen=True)
class PathPolicy:
    workspace: Path
    data_roots: tuple[Path, ...]
    model_roots: tuple[Path, ...]
    admin_roots: tuple[Path, ...]
    output_root: Path
    forbidden: tuple[Path, ...]

    def read_roots(self, kind: Kind, admin: bool) -> tuple[Path, ...]:
        roots = self.data_roots + (self.model_roots if kind == "model" else ())
        return roots + (self.admin_roots if admin else ())

    def is_forbidden(self, path: Path) -> bool:
        return any(_within(path, f) for f in self.forbidden)


def policy(base: Path | None = None) -> PathPolicy:
    """The roots for a workspace (default: BUGAGARIC_WORKSPACE), from the environment. Roots are resolved too, so
    a root that is itself a symlink compares correctly."""
    ws = (base or workspace()).resolve()

    def paths_from(name: str, default: tuple[Path, ...]) -> tuple[Path, ...]:
        raw = os.environ.get(name, "")
        parts = [p.strip() for p in raw.split(os.pathsep) if p.strip()]
        return tuple(resolve(p, ws).resolve() for p in parts) if parts else default

    state = resolve(os.environ.get("BUGAGARIC_STATE_DIR") or "var", ws).resolve()
    forbidden = [state]
    for name in ("BUGAGARIC_AGENT_DIR", "BUGAGARIC_ADMIN_PASSWORD_FILE"):
        if os.environ.get(name):
            forbidden.append(resolve(os.environ[name], ws).resolve())
    database = _sqlite_file(os.environ.get("BUGAGARIC_DATABASE_URL", ""))
    if database is not None:  # the store with its journal files, wherever the operator put it
        store = resolve(database, ws).resolve()
        forbidden += [store, *(store.with_name(store.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]
    return PathPolicy(
        workspace=ws,
        data_roots=paths_from("BUGAGARIC_DATA_ROOTS", (ws,)),
        model_roots=paths_from("BUGAGARIC_MODEL_ROOTS", ()),
        admin_roots=paths_from("BUGAGARIC_ADMIN_PATH_ROOTS", ()),
        output_root=resolve(os.environ.get("BUGAGARIC_OUTPUT_ROOT") or "output", ws).resolve(),
        forbidden=tuple(forbidden),
    )


def _sqlite_file(url: str) -> str | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    database = url[len(prefix):].split("?", 1)[0]
    return database if database and database != ":memory:" else None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def shown(path: Path, base: Path) -> str:
    """A path as a user sees it in a message: relative to the workspace when inside it."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def readable(value: str | os.PathLike[str], field: str, base: Path | None = None, *, kind: Kind = "data",
             error: type[ConfigError] = ConfigError) -> Path:
    """The resolved path (symlinks followed) of something a task may read, or `error` naming `field`.

    It must exist and lie inside the read roots, outside the platform's state, and, inside the output root, within
    a task of the same owner. Messages name what the user gave, never where a symlink pointed.
    """
    if is_ref(value):  # the agent fetched it for this task after the control plane checked who may use it
        return input_path(str(value), field, error=error)
    rules = policy(base)
    given = str(value)
    try:
        path = resolve(value, rules.workspace).resolve(strict=True)
    except FileNotFoundError:
        raise error(field, f"{field}: file not found: {given}") from None
    except (OSError, RuntimeError):  # a symlink loop, a name too long, ...
        raise error(field, f"{field}: cannot be read: {given}") from None
    who = current_scope()
    if rules.is_forbidden(path) or not any(_within(path, root) for root in rules.read_roots(kind, who.admin)):
        raise error(field, f"{field}: {given!r} is outside the directories tasks may read "
                           f"({_roots_text(rules, kind, who.admin)})")
    if _within(path, rules.output_root) and not who.admin:
        marker = owning_task(path, rules.output_root)
        if marker is not None and marker.get("owner") != who.owner:
            raise error(field, f"{field}: {given!r} belongs to another user's task")
    return path


def readable_file(value: str | os.PathLike[str], field: str, base: Path | None = None, *,
                  error: type[ConfigError] = DataError) -> Path:
    """`readable`, and a regular file within the size limit (not a device, FIFO, socket or directory)."""
    path = readable(value, field, base, error=error)
    check_regular_file(path, field, str(value), error=error)
    return path


def check_regular_file(path: Path, field: str, given: str, *, error: type[ConfigError] = DataError) -> None:
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise error(field, f"{field}: {given} is a directory, expected a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(field, f"{field}: {given} is not a regular file")
    limit = limits().max_file_bytes
    if info.st_size > limit:
        raise error(field, f"{field}: {given} is {size_text(info.st_size)}, over the {size_text(limit)} limit of a data "
                           "file (BUGAGARIC_MAX_DATA_FILE_BYTES)")


def owning_task(path: Path, output_root: Path) -> dict | None:
    """The marker of the task directory that holds `path` (the nearest one above it, below the output root)."""
    for directory in (path, *path.parents):
        if directory == output_root or output_root not in directory.parents:
            return None
        marker = directory / TASK_MARKER
        if marker.is_file():
            try:
                found = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                found = None
            return found if isinstance(found, dict) else {}
    return None


def _roots_text(rules: PathPolicy, kind: Kind, admin: bool) -> str:
    names = [shown(root, rules.workspace) if root != rules.workspace else "the workspace"
             for root in rules.read_roots(kind, admin)]
    return ", ".join(names) + "; never the platform's state directory"


def size_text(count: float) -> str:
    """A byte count for a person: "1.5 GiB", "12 bytes"."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"
