"""A trainer that only prints, for the log pipeline's tests and benchmarks: `python -m tests.helpers.log_printer
--config FILE`.

Config: lines (how many), interval (seconds between lines; 0 = as fast as it can), delay (seconds to wait before the
first line, so a client can connect first), pause_at and pause (after line pause_at, wait pause seconds). Each stdout
line is "<i> <time.time() when printed>", flushed at once. Imports nothing heavy.
Imported as a module (not run) with BUGAGARIC_TRAINER_PLUGINS=tests.helpers.log_printer, it registers the task type
`log-printer` (on the control plane and on the agent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TYPE_NAME = "log-printer"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    with open(parser.parse_args().config) as f:
        cfg = json.load(f)
    lines, interval = int(cfg.get("lines", 0)), float(cfg.get("interval", 0.0))
    pause_at, pause = int(cfg.get("pause_at", 0)), float(cfg.get("pause", 0.0))
    time.sleep(float(cfg.get("delay", 0.0)))
    next_at = time.monotonic()
    for i in range(1, lines + 1):
        print(f"{i} {time.time():.6f}", flush=True)
        if i == pause_at:
            time.sleep(pause)
            next_at = time.monotonic()
        elif interval:
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return 0


def task_type():
    from pydantic import BaseModel, ConfigDict

    from trainers.registry import DataReport, TaskType

    class LogBenchConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        lines: int = 0
        interval: float = 0.0
        delay: float = 0.0
        pause_at: int = 0
        pause: float = 0.0

    return TaskType(name=TYPE_NAME, description="prints time-stamped lines", config_model=LogBenchConfig,
                    entry_module=__name__, validate_data=lambda c, w: DataReport(path="", rows=0),
                    default_config={}, data_example={}, listed=False)


if __name__ == "__main__":
    sys.exit(main())
elif __name__ in os.environ.get("BUGAGARIC_TRAINER_PLUGINS", "").split(","):
    from trainers import registry as _registry

    _registry.register(task_type())
