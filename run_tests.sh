#!/usr/bin/env bash
# Sets up everything the tests need (.venv with the test extras, Chromium, the console's node modules and build) and
# runs the console's unit tests (Vitest), then the whole Python suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh test
scripts/ensure_browser.sh
node frontend/server/ensure-build.mjs
(cd frontend && npm test --silent)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
