"""The models this agent holds: Hugging Face model directories under its models directory (`BUGAGARIC_MODELS_DIR`,
default `<workspace>/models`), reported to the control plane at registration and in every heartbeat.

A model directory holds `config.json`, or is a sentence-transformers directory (`modules.json` /
`config_sentence_transformers.json`); its name is its path under the models directory ("tiny-llama", "org/name").
A task naming a model by that name (or by the path the agent reports) gets the model's local path in its config.

Scanning walks the files (for the sizes): the result is kept and scanned again at most every RESCAN_SECONDS, or
sooner when the models directory's own mtime changes (a model added or removed at its top level).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from trainers.registry import model_values

log = logging.getLogger(__name__)

RESCAN_SECONDS = 30.0
MAX_DEPTH = 3  # "org/name" and one more level: a models dir is not a place to walk forever
CAUSAL_LM = "causal_lm"
SENTENCE_TRANSFORMERS = "sentence_transformers"
OTHER = "other"
_SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json")
# model_type values of decoder-only LMs whose config may lack `architectures` (an older or hand-written config).
_LM_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
    "gpt2", "gpt_neo", "gpt_neox", "gptj", "opt", "bloom", "falcon", "mpt", "starcoder2", "olmo", "cohere",
})


@dataclass(frozen=True)
class HeldModel:
    name: str         # its path under the models directory, "/"-separated
    kind: str         # causal_lm, sentence_transformers or other
    size_bytes: int
    path: str         # as a task may name it here: relative to the workspace when inside it, else absolute
    local_path: Path  # absolute, symlinks followed: what the trainer loads


def is_model_dir(directory: Path) -> bool:
    return any((directory / name).is_file() for name in ("config.json", *_SENTENCE_TRANSFORMERS_FILES))


def model_kind(directory: Path) -> str:
    if any((directory / name).is_file() for name in _SENTENCE_TRANSFORMERS_FILES):
        return SENTENCE_TRANSFORMERS
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return OTHER
    if not isinstance(config, dict):
        return OTHER
    architectures = config.get("architectures") or []
    if any(isinstance(a, str) and a.endswith("ForCausalLM") for a in architectures):
        return CAUSAL_LM
    return CAUSAL_LM if config.get("model_type") in _LM_MODEL_TYPES else OTHER


def directory_size(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory, followlinks=False):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size  # a symlinked file counts with its target's size
            except OSError:
                pass  # a dangling link or a file removed meanwhile
    return total


def scan(models_dir: Path, workspace: Path) -> list[HeldModel]:
    """Every model directory under models_dir, by name."""
    found: list[HeldModel] = []
    if not models_dir.is_dir():
        return found
    workspace = workspace.resolve()

    def visit(directory: Path, depth: int) -> None:
        try:
            entries = sorted(directory.iterdir())
        except OSError as exc:
            log.warning("models directory %s: cannot list %s (%s)", models_dir, directory, exc.strerror or exc)
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():  # hidden: caches, partial copies
                continue
            if is_model_dir(entry):
                found.append(_held(entry, models_dir, workspace))
            elif depth < MAX_DEPTH:
                visit(entry, depth + 1)

    visit(models_dir, 1)
    return found


def _held(directory: Path, models_dir: Path, workspace: Path) -> HeldModel:
    absolute = Path(os.path.abspath(directory))
    try:
        path = absolute.relative_to(workspace).as_posix()
    except ValueError:
        path = str(absolute)
    return HeldModel(name=directory.relative_to(models_dir).as_posix(), kind=model_kind(directory),
                     size_bytes=directory_size(directory.resolve()), path=path, local_path=directory.resolve())


class ModelInventory:
    """The scan of one models directory, kept fresh cheaply; safe to read from threads."""

    def __init__(self, models_dir: Path, workspace: Path, rescan_seconds: float = RESCAN_SECONDS):
        self.models_dir = Path(os.path.abspath(models_dir))
        self.workspace = workspace
        self.rescan_seconds = rescan_seconds
        self._lock = threading.Lock()
        self._models: list[HeldModel] = []
        self._scanned_at: float | None = None
        self._scanned_mtime: float | None = None

    def _mtime(self) -> float | None:
        try:
            return self.models_dir.stat().st_mtime
        except OSError:
            return None

    def models(self) -> list[HeldModel]:
        with self._lock:
            mtime = self._mtime()
            stale = (self._scanned_at is None or mtime != self._scanned_mtime
                     or time.monotonic() - self._scanned_at >= self.rescan_seconds)
            if stale:
                before = {m.name for m in self._models}
                self._models = scan(self.models_dir, self.workspace)
                self._scanned_at, self._scanned_mtime = time.monotonic(), mtime
                now = {m.name for m in self._models}
                if now != before:
                    log.info("models in %s: %s", self.models_dir, ", ".join(sorted(now)) or "none")
            return list(self._models)

    def lookup(self, name_or_path: str) -> HeldModel | None:
        """The held model a config's `model_name_or_path` names (by its name or its reported path), if any."""
        if not name_or_path:
            return None
        for model in self.models():
            if name_or_path in (model.name, model.path):
                return model
        return None


def hub_access() -> bool:
    """Whether trainers here may download from the Hugging Face hub: unless HF_HUB_OFFLINE says otherwise."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on")


MODEL_ROOTS_ENV = "BUGAGARIC_MODEL_ROOTS"


def place_models(config: dict, inventory: ModelInventory) -> list[HeldModel]:
    """Rewrites each model field of the config (trainers.registry.MODEL_FIELDS) that names a held model to that
    model's local path; returns the models placed."""
    placed = []
    for field, value in model_values(config):
        model = inventory.lookup(value)
        if model is not None:
            config[field] = str(model.local_path)
            placed.append(model)
    return placed


def model_roots_env(inventory: ModelInventory, models: list[HeldModel], env: dict[str, str]) -> dict[str, str]:
    """BUGAGARIC_MODEL_ROOTS for a trainer or dry run: what it was, plus the models directory (and each placed model
    where a symlink takes it outside), so the path policy lets it read the models this agent offers."""
    current = env.get(MODEL_ROOTS_ENV, os.environ.get(MODEL_ROOTS_ENV, ""))
    roots = [p for p in current.split(os.pathsep) if p.strip()]
    for extra in (inventory.models_dir.resolve(), *(model.local_path for model in models)):
        if str(extra) not in roots:
            roots.append(str(extra))
    return {MODEL_ROOTS_ENV: os.pathsep.join(roots)}
