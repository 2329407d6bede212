"""A `POST /v1/fine_tuning/jobs` body turned into a task (type and config), and a task's config turned back into the
job's `hyperparameters`.

method supervised -> sft, dpo -> dpo (the legacy top-level `hyperparameters` are supervised ones). OpenAI's
hyperparameters map to the type's config: n_epochs -> num_train_epochs, batch_size -> per_device_train_batch_size,
learning_rate_multiplier -> learning_rate as a multiple of the type's default, beta -> beta (dpo); "auto" (or leaving
one out) is the type's default. Any other key of the type's own config (save_steps, max_steps, max_length, use_lora,
...) is taken in `hyperparameters` too, as the platform's extension; the paths come from `model`, `training_file` and
`validation_file` only. The control plane validates the config as for any task, and its field errors come back
naming the param the caller sent (`params`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.openai_api import ids
from gateway.openai_api.errors import invalid_request

METHOD_TYPES = {"supervised": "sft", "dpo": "dpo"}
OPENAI_METHODS = {task_type: method for method, task_type in METHOD_TYPES.items()}
# OpenAI name -> config key, per method.
HYPERPARAMETERS = {
    "supervised": {"n_epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
                   "learning_rate_multiplier": "learning_rate"},
    "dpo": {"n_epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
            "learning_rate_multiplier": "learning_rate", "beta": "beta"},
}
# Set from the body's own fields, never through hyperparameters.
RESERVED_KEYS = {"model_name_or_path": "model", "train_data_path": "training_file", "eval_data_path": "validation_file",
                 "seed": "seed"}
TOP_LEVEL = ("model", "training_file", "validation_file", "suffix", "seed", "method", "hyperparameters",
             "integrations", "metadata")
_SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
INT32_MAX = 2**31 - 1


@dataclass
class JobRequest:
    method: str  # supervised | dpo
    task_type: str
    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]  # as given (OpenAI names and own config keys)
    hyperparameters_param: str  # where they were given: "method.<type>.hyperparameters" or "hyperparameters"
    seed: int | None
    suffix: str | None
    params: dict[str, str] = field(default_factory=dict)  # config key -> the param that set it

    def config(self, config_schema: dict[str, Any]) -> dict[str, Any]:
        """The task config, with the type's JSON schema (its properties and defaults) from the control plane's
        templates. 400 naming the param for an unknown hyperparameter or a bad value."""
        properties = config_schema.get("properties", {})
        config: dict[str, Any] = {"model_name_or_path": self.model,
                                  "train_data_path": f"dataset:{ids.dataset_id(self.training_file)}"}
        self.params.update(model_name_or_path="model", train_data_path="training_file")
        if self.validation_file:
            config["eval_data_path"] = f"dataset:{ids.dataset_id(self.validation_file)}"
            self.params["eval_data_path"] = "validation_file"
        if self.seed is not None:
            config["seed"] = self.seed
            self.params["seed"] = "seed"
        aliases = HYPERPARAMETERS[self.method]
        for name, value in self.hyperparameters.items():
            param = f"{self.hyperparameters_param}.{name}"
            key = aliases.get(name, name)
            if name not in aliases and (key in RESERVED_KEYS or key not in properties
                                        or key in aliases.values()):
                raise invalid_request(self._unknown(name, properties), param)
            if key in config:
                raise invalid_request(f"{param}: {key} is set twice (give it once)", param)
            self.params[key] = param
            if name in aliases:
                value = _openai_value(name, value, param)
                if value == "auto":
                    continue  # the type's default
                if name == "learning_rate_multiplier":
                    value = value * _default(properties, key, param)
            config[key] = value
        return config

    def _unknown(self, name: str, properties: dict[str, Any]) -> str:
        own = sorted(k for k in properties if k not in RESERVED_KEYS and k not in HYPERPARAMETERS[self.method].values())
        return (f"unknown hyperparameter {name!r} for method {self.method!r}: use "
                f"{', '.join(HYPERPARAMETERS[self.method])}, or one of this platform's {self.task_type} config keys "
                f"({', '.join(own)})")


def _default(properties: dict[str, Any], key: str, param: str) -> float:
    default = properties.get(key, {}).get("default")
    if not isinstance(default, (int, float)):
        raise invalid_request(f"{param}: the {key} of this type has no default to multiply", param)
    return float(default)


def _openai_value(name: str, value: Any, param: str) -> Any:
    if value == "auto":
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if name in ("n_epochs", "batch_size"):
        if not number or not float(value).is_integer() or not 1 <= value <= INT32_MAX:
            raise invalid_request(f"{param} must be \"auto\" or a positive integer (got {value!r})", param)
        return int(value)
    if not number or not value > 0:
        raise invalid_request(f"{param} must be \"auto\" or a number greater than 0 (got {value!r})", param)
    return value


def _string(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid_request(f"'{name}' must be a non-empty string", name,
                              "missing_required_parameter" if value is None else "invalid_value")
    return value.strip()


def _object(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_request(f"'{param}' must be an object", param)
    return value


def parse_job_request(body: Any) -> JobRequest:
    if not isinstance(body, dict):
        raise invalid_request("the request body must be a JSON object")
    unknown = sorted(k for k in body if k not in TOP_LEVEL)
    if unknown:
        raise invalid_request(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(TOP_LEVEL)}", unknown[0],
                              "unknown_parameter")
    model = _string(body, "model", required=True)
    training_file = _string(body, "training_file", required=True)
    validation_file = _string(body, "validation_file", required=False)
    suffix = _string(body, "suffix", required=False)
    if suffix is not None and not _SUFFIX.fullmatch(suffix):
        raise invalid_request("'suffix' must be 1 to 64 letters, digits, '-' or '_'", "suffix")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= INT32_MAX):
        raise invalid_request(f"'seed' must be an integer between 0 and {INT32_MAX}", "seed")
    for name in ("integrations", "metadata"):
        if body.get(name):
            raise invalid_request(f"'{name}' is not supported by this server (leave it out)", name, "unsupported_value")
    method, hyperparameters, where = _method(body)
    return JobRequest(method, METHOD_TYPES[method], model, training_file, validation_file, hyperparameters, where,
                      seed, suffix)


def _method(body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(method type, its hyperparameters, the param they were given under)."""
    legacy = _object(body.get("hyperparameters"), "hyperparameters")
    method = _object(body.get("method"), "method")
    if not method:
        return "supervised", legacy, "hyperparameters"
    kind = method.get("type")
    if kind not in METHOD_TYPES:
        raise invalid_request(f"method.type must be one of {', '.join(METHOD_TYPES)} (got {kind!r})", "method.type")
    unknown = sorted(k for k in method if k not in ("type", *METHOD_TYPES))
    if unknown or any(k in method for k in METHOD_TYPES if k != kind):
        extra = unknown[0] if unknown else next(k for k in METHOD_TYPES if k != kind and k in method)
        raise invalid_request(f"method.{extra} does not go with method.type {kind!r}", f"method.{extra}")
    settings = _object(method.get(kind), f"method.{kind}")
    if sorted(settings) not in ([], ["hyperparameters"]):
        extra = next(k for k in settings if k != "hyperparameters")
        raise invalid_request(f"unknown parameter method.{kind}.{extra}", f"method.{kind}.{extra}", "unknown_parameter")
    hyperparameters = _object(settings.get("hyperparameters"), f"method.{kind}.hyperparameters")
    if legacy:
        if kind != "supervised" or hyperparameters:
            raise invalid_request("give hyperparameters in method.<type>.hyperparameters only (the top-level "
                                  "'hyperparameters' are the legacy form of supervised ones)", "hyperparameters")
        return kind, legacy, "hyperparameters"
    return kind, hyperparameters, f"method.{kind}.hyperparameters"
