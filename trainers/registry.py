"""The task-type registry: type name -> config model, template, data validator and training entry point.

Every other part of the platform (control plane validation, templates, the agent's launcher, the console form)
asks this registry, so adding a fifth type touches `trainers/` only: write the sub-package and call `register`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from trainers.errors import ConfigError, DataProblem, UnknownTaskType


@dataclass(frozen=True)
class DataReport:
    """What a data validator found: how many rows, and the problems (line-numbered)."""

    path: str
    rows: int
    problems: list[DataProblem] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    # The line (JSONL) or row (JSON list) number of each row kept, in order, when the rows were kept.
    lines: list[int] = field(default_factory=list)


# The config keys that name a model (the trained one, KBAlign's embedding model, GISTEmbed's guide): each may be a
# model an agent holds (by name), a path on the agent, or a hub id. The agent rewrites a held model's name to its
# local path; the control plane places a task on an agent holding every held model it names.
MODEL_FIELDS = ("model_name_or_path", "embedding_model_name_or_path", "guide_model_name_or_path")


def model_values(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, value) of each model a config names."""
    return [(name, config[name]) for name in MODEL_FIELDS if isinstance(config.get(name), str) and config[name]]


# The schema key of a type's card texts (a JSON Schema extension keyword; validators ignore it).
TYPE_TEXTS = "x-task-type"


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    config_model: type[BaseModel]
    # Run as `python -m <entry_module> --config FILE`.
    entry_module: str
    # Checks the data the (already parsed) config points at; raises DataError for a missing file or bad rows.
    validate_data: Callable[[BaseModel, Path], DataReport]
    # The template shown to users: the seed's defaults and one data row.
    default_config: dict[str, Any]
    data_example: dict[str, Any]
    # Optional deeper dry-run checks, e.g. token-length statistics for LM types. May import heavy libraries: it runs
    # only inside the preflight subprocess (`python -m trainers.preflight`), never in a service. Returns extra stats.
    preflight: Callable[[BaseModel, Path], dict[str, Any]] | None = None
    # The config keys that name an input (a data file, a knowledge base, a source model): each accepts a path on the
    # agent or a platform object (`dataset:<id>`, `task:<id>`, see trainers.paths).
    input_fields: tuple[str, ...] = ()
    # A factory (no arguments) of the checker of one uploaded file's rows, with the trainer's own rules: calling the
    # checker on a row's JSON value returns the parsed row or raises ValidationError/ValueError, and its `stats` are
    # the type's counters (trainers.common.jsonl.RowChecker). A factory because a checker may keep state across one
    # file's rows (KBAlign: the first row decides the kind). Used by trainers.common.row_stream.RowStream.for_type.
    # None: the type takes no uploaded datasets.
    row_parser: Callable[[], Callable[[Any], Any]] | None = None
    # Offered in the templates and the console's type list (false for a type queued by other means, e.g. export).
    listed: bool = True
    # The console's type card in both languages: a human name and a short summary (`description` is the API's).
    title_zh: str = ""
    title_en: str = ""
    summary_zh: str = ""
    summary_en: str = ""

    def parse_config(self, raw: Any) -> BaseModel:
        """Validates a config (a dict, or a JSON string); a ConfigError names the first bad field."""
        try:
            if isinstance(raw, (str, bytes)):
                return self.config_model.model_validate_json(raw)
            return self.config_model.model_validate(raw)
        except ValidationError as exc:
            raise config_error_from_validation(exc) from None

    def json_schema(self) -> dict[str, Any]:
        """The config model's schema, carrying the type card's texts too (TYPE_TEXTS), so the templates the console
        reads hold every word of the form in one place."""
        schema = self.config_model.model_json_schema()
        schema[TYPE_TEXTS] = {"title_zh": self.title_zh, "title_en": self.title_en,
                              "summary_zh": self.summary_zh, "summary_en": self.summary_en}
        return schema


def config_error_from_validation(exc: ValidationError) -> ConfigError:
    """Turns pydantic's first error into a message that names the config key."""
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    field_name = ".".join(loc)
    kind = first.get("type", "")
    if kind == "missing":
        message = f"missing required config key {field_name!r}"
    elif kind == "extra_forbidden":
        message = f"unknown config key {field_name!r}"
    elif kind in {"json_invalid", "model_type", "model_attributes_type"} and not loc:  # the config itself, not a key
        field_name = ""
        message = f"config must be a JSON object: {first.get('msg')}"
    else:
        given = first.get("input")
        message = f"{field_name}: {first.get('msg')} (got {json.dumps(given, default=str)})"
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more problem(s))"
    return ConfigError(field_name, message)


_REGISTRY: dict[str, TaskType] = {}


def register(task_type: TaskType) -> TaskType:
    """Adds (or replaces) a task type. Returns it so a module can keep a handle."""
    _REGISTRY[task_type.name] = task_type
    return task_type


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> TaskType:
    _load_builtin_types()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskType(name, sorted(_REGISTRY)) from None


def all_types() -> list[TaskType]:
    _load_builtin_types()
    return list(_REGISTRY.values())


_builtins_loaded = False
# Modules outside trainers/ that register more types (comma-separated), e.g. a team's own trainer package.
PLUGINS_ENV = "BUGAGARIC_TRAINER_PLUGINS"


def _load_builtin_types() -> None:
    """The first time the registry is read: imports every `trainers/<type>/spec.py` (cheap: schemas only), so a new
    type is a new sub-package and nothing else, then the plugin modules named in BUGAGARIC_TRAINER_PLUGINS."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import importlib
    import os
    import pkgutil

    import trainers

    for module in sorted(pkgutil.iter_modules(trainers.__path__), key=lambda m: m.name):
        if module.ispkg and (Path(trainers.__path__[0]) / module.name / "spec.py").is_file():
            importlib.import_module(f"trainers.{module.name}.spec")
    for name in filter(None, (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)
