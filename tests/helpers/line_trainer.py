"""A stand-in trainer for the agent's process tests: `python -m tests.helpers.line_trainer --config FILE`.

Config keys (all optional): lines (stdout lines "out <i>"), stderr_lines ("err <i>"), metrics (metric events),
sleep (seconds between lines), partial_tail (a last stdout line with no newline), hold (seconds to sleep at the end),
exit_code, self_signal (kill itself with this signal at the end), ignore_sigterm, grandchild (start a `sleep` in the
same process group and write its pid to grandchild.pid beside the config), print_env (first print one line
"env KEY=VALUE ..." of the device, rank and attempt variables), pid_file (write its own pid to trainer-<rank>.pid
beside the config). Under torchrun every rank prints its lines; only rank 0 writes metrics.
Imports nothing heavy, so it starts in well under a second.

Imported as a module (not run), it is also the plugin that registers it as the task type `line-test`
(`BUGAGARIC_TRAINER_PLUGINS=tests.helpers.line_trainer`, for an agent started as a real process); `task_type()` builds
that type for tests that register it themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config_path = Path(parser.parse_args().config)
    cfg = json.loads(config_path.read_text())
    if cfg.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if cfg.get("grandchild"):
        child = subprocess.Popen(["sleep", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tmp = config_path.with_name("grandchild.pid.tmp")
        tmp.write_text(str(child.pid))
        os.replace(tmp, config_path.with_name("grandchild.pid"))
    rank = os.environ.get("RANK", "0")
    if cfg.get("pid_file"):
        tmp = config_path.with_name(f"trainer-{rank}.pid.tmp")
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, config_path.with_name(f"trainer-{rank}.pid"))
    if cfg.get("print_env"):
        keys = ("CUDA_VISIBLE_DEVICES", "RANK", "LOCAL_RANK", "WORLD_SIZE", "BUGAGARIC_ATTEMPT",
                "BUGAGARIC_RESUME_FROM_CHECKPOINT")
        print("env " + " ".join(f"{key}={os.environ.get(key, '-')}" for key in keys), flush=True)
    metrics_file = os.environ.get("BUGAGARIC_METRICS_FILE") if rank == "0" else None
    lines, err_lines, metrics = cfg.get("lines", 0), cfg.get("stderr_lines", 0), cfg.get("metrics", 0)
    with open(metrics_file, "a") if metrics_file else open(os.devnull, "w") as mf:
        for i in range(1, max(lines, err_lines, metrics) + 1):
            if i <= lines:
                print(f"out {i}", flush=True)
            if i <= err_lines:
                print(f"err {i}", file=sys.stderr, flush=True)
            if i <= metrics:
                mf.write(json.dumps({"step": i, "total_steps": metrics, "loss": 1.0 / i}) + "\n")
                mf.flush()
            if cfg.get("sleep"):
                time.sleep(cfg["sleep"])
    if cfg.get("partial_tail"):
        sys.stdout.write("tail without newline")
        sys.stdout.flush()
    if cfg.get("hold"):
        time.sleep(cfg["hold"])
    if cfg.get("self_signal"):
        os.kill(os.getpid(), cfg["self_signal"])
    return int(cfg.get("exit_code", 0))


TYPE_NAME = "line-test"


def task_type():
    """The registry entry; pydantic and the registry are imported here only, never when the trainer runs."""
    from pydantic import BaseModel, ConfigDict

    from trainers.registry import DataReport, TaskType

    class LineConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        lines: int = 0
        stderr_lines: int = 0
        metrics: int = 0
        sleep: float = 0.0
        partial_tail: bool = False
        hold: float = 0.0
        exit_code: int = 0
        self_signal: int = 0
        ignore_sigterm: bool = False
        grandchild: bool = False
        print_env: bool = False
        pid_file: bool = False

    return TaskType(
        name=TYPE_NAME, description="prints numbered lines", config_model=LineConfig,
        entry_module="tests.helpers.line_trainer", validate_data=lambda c, w: DataReport(path="", rows=0),
        default_config={}, data_example={})


if __name__ == "__main__":
    sys.exit(main())
elif os.environ.get("BUGAGARIC_TRAINER_PLUGINS", "").find(__name__) >= 0:
    from trainers import registry as _registry

    _registry.register(task_type())
