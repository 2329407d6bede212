"""How a run under torchrun really ended. torchrun exits 1 whatever its failed worker did, and every worker line it
passes on carries a rank prefix; the worker's own exit code (3: invalid data, -9: killed, ...) and its closing
`error: ...` line are what the task's outcome must say."""

from __future__ import annotations

import re

_CHILD_FAILED = "ChildFailedError"
_ROOT_CAUSE = "Root Cause"
_EXIT_CODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
# TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE as the agent sets it ("[rank1]:"), or torchrun's default ("[default1]:").
_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:")


def worker_outcome(code: int, lines: list[str]) -> tuple[int, list[str]]:
    """(exit code, stderr tail) as the failed worker left them: torchrun's root-cause exit code instead of its own
    1, and the lines without their rank prefixes. Anything else is returned as it came."""
    if code != 1 or not any(_CHILD_FAILED in line for line in lines):
        return code, lines
    worker_code = code
    after_root = False
    for line in lines:
        after_root = after_root or _ROOT_CAUSE in line
        match = _EXIT_CODE.match(line) if after_root else None
        if match:
            worker_code = int(match.group(1))
            break
    return worker_code, [_RANK_PREFIX.sub("", line, count=1) for line in lines]
