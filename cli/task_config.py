"""A task's config read from a YAML or JSON file. Problems are told with the file, and the line where the parser
can say it; the config's own keys are checked by the control plane (its 400 names the key)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from cli.errors import CliError

# PyYAML follows YAML 1.1, where `5e-5` is a *string* (1.1 floats need a dot); a learning rate written that way must
# reach the trainer as the number YAML 1.2 and JSON make of it.
_FLOAT_1_2 = re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$|^[-+]?(?:\d[\d_]*)?\.\d+$|^[-+]?\d[\d_]*\.\d*$"
                        r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")


class _ConfigLoader(yaml.SafeLoader):
    pass


_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


def load_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"config file {path}: no such file", field="config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"config file {path}: cannot read it: {exc}", field="config") from None
    if path.suffix.lower() == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"config file {path} line {exc.lineno}: not JSON: {exc.msg}", field="config") from None
    else:
        try:
            config = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader with one more resolver
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise CliError(f"config file {path}{where}: not YAML: {problem}", field="config") from None
    if not isinstance(config, dict):
        kind = "empty" if config is None else f"a {type(config).__name__}"
        raise CliError(f"config file {path}: must hold a mapping of config keys (it is {kind})", field="config")
    bad_keys = [key for key in config if not isinstance(key, str)]
    if bad_keys:
        raise CliError(f"config file {path}: config keys must be strings (got {bad_keys[0]!r})", field=str(bad_keys[0]))
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:  # a YAML date, or .inf/.nan: nothing JSON can carry
        raise CliError(f"config file {path}: a value JSON cannot carry: {exc}", field="config") from None
    return config
