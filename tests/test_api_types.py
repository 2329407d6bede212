"""The console's committed API types are exactly what the generator produces from today's OpenAPI document
(as tests/test_protos.py does for the protos): a route or model changed without `python scripts/gen_api_types.py`
fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_api_types.py"
API_DIR = ROOT / "frontend" / "src" / "api"
GENERATED = ("openapi.json", "schema.d.ts")


def test_committed_api_types_match_the_generator(tmp_path: Path):
    subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(tmp_path)], check=True, cwd=ROOT,
                   capture_output=True, text=True)
    stale = [name for name in GENERATED
             if not (API_DIR / name).exists() or (API_DIR / name).read_bytes() != (tmp_path / name).read_bytes()]
    assert not stale, f"regenerate with `.venv/bin/python scripts/gen_api_types.py`: stale {stale}"


def test_the_console_types_come_from_the_generated_schema():
    types = (API_DIR / "types.ts").read_text(encoding="utf-8")
    assert 'from "./schema"' in types
    for name in ("Task", "LogLine", "MetricPoint", "Dataset", "ValidationReport", "SystemHealth", "LoginReply"):
        assert f'export type {name} = Schemas["{name}"]' in types, name
    assert "export interface Task " not in types  # no hand-written copy beside the generated one
