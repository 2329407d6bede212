#!/usr/bin/env bash
# Creates .venv (Python 3.11+) if missing and installs the project into it; reinstalls when pyproject.toml changes.
# Usage: scripts/ensure_venv.sh [extra]   e.g. `scripts/ensure_venv.sh test` installs the test extras too.
set -euo pipefail
cd "$(dirname "$0")/.."

extra="${1:-}"
python_bin="${BUGAGARIC_PYTHON:-}"
if [ -z "$python_bin" ]; then
  # torch 2.13.0's CPU wheel on this platform's disk is for Python 3.11: prefer it.
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi

spec="."
[ -n "$extra" ] && spec=".[$extra]"
stamp=".venv/.bugagaric-installed-${extra:-base}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing the project into .venv (${spec}) ..."
  mkdir -p var/logs
  chmod 700 var var/logs  # the platform's state and logs: its owner's only
  log=var/logs/pip-install.log
  (umask 077 && : >"$log")
  # torch is pinned in the same command as everything that depends on it, so pip takes the local CPU wheel
  # instead of resolving a multi-GB CUDA build.
  if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install "torch==2.13.0" -e "$spec"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "installing failed; the whole pip output is in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
