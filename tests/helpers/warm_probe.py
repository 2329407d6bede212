"""`python -m tests.helpers.warm_probe --config FILE`: a trainer that writes what its process looks like from inside
(environment, working directory, argv, signal handlers, open descriptors, sys.path, a few random draws) to
probe.json beside its config, then holds for `hold` seconds. The warm pool's tests compare it with a cold start.
`task_type()` builds its registry entry (the type `warm-probe`)."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

TYPE_NAME = "warm-probe"


def report(config_path: Path) -> dict:
    handlers = {name: repr(signal.getsignal(getattr(signal, name))) for name in ("SIGTERM", "SIGINT", "SIGCHLD")}
    numpy = sys.modules.get("numpy")
    return {
        "pid": os.getpid(), "environ": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv, "main": __name__,
        "signals": handlers, "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")), "sys_path": sys.path,
        "random": random.random(), "numpy_random": float(numpy.random.random()) if numpy is not None else None,
        "config": str(config_path),
    }


def main() -> int:
    config_path = Path(sys.argv[sys.argv.index("--config") + 1])
    config = json.loads(config_path.read_text())
    tmp = config_path.with_name("probe.json.tmp")
    tmp.write_text(json.dumps(report(config_path)))
    os.replace(tmp, config_path.with_name("probe.json"))
    print("probed", flush=True)
    time.sleep(float(config.get("hold", 0)))
    return int(config.get("exit_code", 0))


def task_type():
    from pydantic import BaseModel, ConfigDict

    from trainers.registry import DataReport, TaskType

    class ProbeConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        hold: float = 0.0
        exit_code: int = 0
        inputs: list[str] = []

    return TaskType(name=TYPE_NAME, description="reports its process", config_model=ProbeConfig,
                    entry_module="tests.helpers.warm_probe", validate_data=lambda c, w: DataReport(path="", rows=0),
                    default_config={}, data_example={}, input_fields=("inputs",))


if __name__ == "__main__":
    sys.exit(main())
