"""ValidateTask's dry run: `python -m trainers.preflight` in a child process on this host's files, its report read
back from its last stdout line. The child gets the agent's environment without its secrets (it reads user data and
configs), plus what the request needs (whose paths, the fetched inputs, the model roots)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from gpu_agent.process_runner import environment_without_secrets

TIMEOUT_SECONDS = 300


async def run(type_name: str, config_json: str, workspace: Path, scratch_dir: Path, *,
              env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The report; RuntimeError when the dry run itself crashed or took too long."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=scratch_dir, prefix="preflight-", suffix=".json")
    config_file = Path(name)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(config_json or "{}")
    child_env = environment_without_secrets(env)
    child_env["BUGAGARIC_WORKSPACE"] = str(workspace)
    argv = [sys.executable, "-m", "trainers.preflight", "--type", type_name, "--config", str(config_file)]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=workspace, env=child_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"the dry run took longer than {TIMEOUT_SECONDS}s") from None
        except asyncio.CancelledError:  # the caller gave up: so does the dry run
            process.kill()
            await process.wait()
            raise
    finally:
        config_file.unlink(missing_ok=True)
    try:
        return json.loads(stdout.decode().strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"the dry run crashed (exit {process.returncode}): {' | '.join(tail)}") from None
