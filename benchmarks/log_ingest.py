"""Log ingest: a trainer printing 200k lines as fast as it can (one flushed write per line), end to end into the
control plane's store. lines/s = lines / (store holds the last line - the first line printed); lost and doubled count
the lines of the store against what was printed ("<i> <time>", i = 1..N, each once, in seq order).

    .venv/bin/python benchmarks/log_ingest.py [--lines 200000]

"Before" (the landed code): `git worktree add /tmp/before-logs HEAD`, copy benchmarks/_log_bench.py, this script and
tests/helpers/log_printer.py into it, and run the script from there with this venv.
"""

from __future__ import annotations

import argparse
import json

from _log_bench import TERMINAL, all_lines, load, log_system, submit_printer, wait_stored
from _common import wait


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    n = parser.parse_args().lines
    load_start = load()
    with log_system() as (stack, client):
        task = submit_printer(client, lines=n)
        stored_at = wait_stored(client, task["id"], n)
        done = wait(client, task["id"], TERMINAL)
        lines = all_lines(client, task["id"])
    numbers = [int(line["text"].split()[0]) for line in lines]
    printed = [float(line["text"].split()[1]) for line in lines]
    first_printed, last_printed = min(printed), max(printed)
    result = {
        "figure": "log ingest", "lines": n, "status": done["status"],
        "lines_per_s": round(n / (stored_at - first_printed)),
        "trainer_print_lines_per_s": round(n / max(1e-9, last_printed - first_printed)),
        "lost": len(set(range(1, n + 1)) - set(numbers)),
        "doubled": len(numbers) - len(set(numbers)),
        "in_order": numbers == sorted(numbers) and [line["seq"] for line in lines] == list(range(1, len(lines) + 1)),
        "load_start": load_start, "load_end": load(),
    }
    print(json.dumps(result))
    print(f"| log ingest, {n} lines | {result['lines_per_s']:,} lines/s (trainer printed at "
          f"{result['trainer_print_lines_per_s']:,}/s) | lost {result['lost']}, doubled {result['doubled']} | "
          f"load {load_start} -> {result['load_end']} |")


if __name__ == "__main__":
    main()
