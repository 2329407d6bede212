"""A stand-in trainer for the agent's process tests: `python -m tests.helpers.line_trainer --config FILE`.

Config keys (all optional): lines (stdout lines "out <i>"), stderr_lines ("err <i>"), metrics (metric events),
sleep (seconds between lines), partial_tail (a last stdout line with no newline), hold (seconds to sleep at the end),
exit_code, self_signal (kill itself with this signal at the end), ignore_sigterm, grandchild (start a `sleep` in the
same process group and write its pid to grandchild.pid beside the config).
Imports nothing heavy, so it starts in well under a second.
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
    metrics_file = os.environ.get("BUGAGARIC_METRICS_FILE")
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


if __name__ == "__main__":
    sys.exit(main())
