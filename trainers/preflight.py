"""The dry run: `python -m trainers.preflight --type TYPE --config FILE` prints a JSON report on stdout.

It checks a task exactly as its trainer would before loading a model — the config against the type's model, the data
against its row validator (row count, the first 20 problems with line numbers and field paths) — and then runs the
type's optional deeper checks with the trainer's own code (the training arguments through transformers' parser, the
options this agent's hardware and packages must allow, token lengths and the rows that do not fit max_length, which
load the tokenizer). A deeper check that finds the config or the data wrong fails the report; one that cannot run
(e.g. a tokenizer that does not load) leaves a warning. Every model the config names must be there to load on this
agent (models live on the agents): a model directory with its config, or a hub id in the hub cache while the hub is
off; a missing one fails the report naming its field and the agent, before a device is spent on it. It runs as a
subprocess of the agent (gpu_agent.dry_run) so that a service never imports the training libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainers import paths, registry
from trainers.errors import ConfigError, DataError, ModelNotFound
from trainers.output_dirs import check_task_paths


def failed_report(type_name: str, field: str = "", message: str = "") -> dict[str, Any]:
    return {
        "ok": False, "type": type_name, "rows": 0, "problems": [], "stats": {},
        "error": {"field": field, "message": message} if message else None, "warnings": [],
    }


def check(type_name: str, raw_config: Any, workspace: Path, *, deep: bool = True,
          task_id: str | None = None) -> dict[str, Any]:
    """The report for one task; never raises for the user's mistakes. Paths are checked for the current
    `trainers.paths` scope; `task_id`: the task the config was stored for (its output_dir ends with it)."""
    report = failed_report(type_name)
    try:
        task_type = registry.get(type_name)
        config = task_type.parse_config(raw_config)
        data = task_type.validate_data(config, workspace)
        check_task_paths(config, type_name, task_id, workspace)
        check_models(config, workspace)
    except DataError as exc:
        report.update(rows=exc.rows, problems=[asdict(p) for p in exc.problems], error={"field": exc.field, "message": exc.message})
        return report
    except ConfigError as exc:
        report["error"] = {"field": exc.field, "message": exc.message}
        return report
    except OSError as exc:  # e.g. permission denied: say so, without a path the user did not give
        report["error"] = {"field": "", "message": f"a file of this task could not be read ({exc.strerror or exc})"}
        return report
    report.update(ok=True, rows=data.rows, stats=dict(data.stats))
    if deep and task_type.preflight is not None:
        try:
            extra = dict(task_type.preflight(config, workspace))
        except DataError as exc:  # e.g. a row too long for max_length under truncation: error
            report.update(ok=False, problems=[asdict(p) for p in exc.problems],
                          error={"field": exc.field, "message": exc.message})
            return report
        except ConfigError as exc:  # e.g. a config_file argument of the wrong type, QLoRA on a CPU-only agent
            report.update(ok=False, error={"field": exc.field, "message": exc.message})
            return report
        except Exception as exc:  # noqa: BLE001 - e.g. the model is not there: the data are still fine, say so
            report["warnings"].append(f"deeper checks skipped: {exc}")
        else:
            report["warnings"].extend(extra.pop("warnings", []))
            report["stats"].update(extra)
    return report


def check_models(config: Any, workspace: Path) -> None:
    """Each model the config names loads on this agent as the trainer will load it (trainers.common.model_loading's
    own check: a directory with config.json, or a hub id, looked up in the hub cache while the hub is off);
    ConfigError naming the field and the agent (BUGAGARIC_AGENT_ID) otherwise. The message names what the user gave,
    not where it resolved to."""
    from trainers.common.model_loading import preflight as locate

    for field, value in registry.model_values({name: getattr(config, name, None) for name in registry.MODEL_FIELDS}):
        if paths.is_ref(value):  # a platform object the agent fetched: the type's own checks read it
            continue
        try:
            locate(value, workspace, field)
        except ModelNotFound:
            agent = os.environ.get("BUGAGARIC_AGENT_ID", "")
            where = f"on agent {agent}" if agent else "on this agent"
            local = paths.resolve(value, workspace)
            if local.is_dir():
                raise ConfigError(field, f"{field}: {value!r} {where} is a directory without config.json, not a "
                                         "model directory") from None
            raise ConfigError(field, f"{field}: no model {value!r} {where}: it is neither a model directory there "
                                     "nor a model in its hub cache (GET /api/finetune/models lists the models the "
                                     "agents hold)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.preflight", description=__doc__)
    parser.add_argument("--type", required=True)
    parser.add_argument("--config", required=True, help="JSON file holding the task's config object")
    parser.add_argument("--shallow", action="store_true", help="skip the deeper checks (no tokenizer)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    text = Path(args.config).read_text(encoding="utf-8")
    try:
        report = check(args.type, json.loads(text), paths.workspace(), deep=not args.shallow)
    except json.JSONDecodeError as exc:
        report = failed_report(args.type, "config", f"config is not valid JSON: {exc}")
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
