#!/usr/bin/env bash
# Sets up .venv on a fresh machine (first run: a few minutes) and starts the whole system in the background:
# control plane (gRPC :50051), one local GPU agent (gRPC :50061) and the REST gateway (:18080; its OpenAI-compatible
# API on :18081).
#   ./start_finetune_system.sh            start what is not running, wait until healthy, print the URLs
#   ./start_finetune_system.sh stop       stop running tasks and every service (no orphans)
#   ./start_finetune_system.sh status     what runs
#   ./start_finetune_system.sh restart
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh
exec .venv/bin/python scripts/system.py "${1:-start}"
