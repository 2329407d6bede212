"""Regenerate the console's API types from the gateway's OpenAPI document, in one command:

    .venv/bin/python scripts/gen_api_types.py        (or, in frontend/: npm run gen:api)

writes frontend/src/api/openapi.json (the document `create_app().openapi()` serves at /openapi.json) and
frontend/src/api/schema.d.ts (openapi-typescript's types of it), which frontend/src/api/types.ts re-exports.
tests/test_api_types.py fails while the committed files differ from what this produces. `--out-dir DIR` writes them
there instead (the test's way to compare).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file: the gateway package is at the repository root

FRONTEND = ROOT / "frontend"
API_DIR = FRONTEND / "src" / "api"
DOCUMENT_NAME = "openapi.json"
TYPES_NAME = "schema.d.ts"
GENERATOR = FRONTEND / "node_modules" / ".bin" / "openapi-typescript"


def document_text() -> str:
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    # Built from the defaults, not this shell's BUGAGARIC_* variables: the same document on every machine.
    return json.dumps(create_app(GatewaySettings.model_construct()).openapi(), indent=2, ensure_ascii=False) + "\n"


def generate(out_dir: Path) -> tuple[Path, Path]:
    """Write the document and its TypeScript types into out_dir; returns their paths."""
    if not GENERATOR.exists():
        raise SystemExit(f"{GENERATOR} is missing: run `npm ci` in {FRONTEND} first")
    out_dir.mkdir(parents=True, exist_ok=True)
    document, types = out_dir / DOCUMENT_NAME, out_dir / TYPES_NAME
    document.write_text(document_text(), encoding="utf-8")
    subprocess.run([str(GENERATOR), str(document), "--output", str(types)], check=True, cwd=FRONTEND,
                   stdout=subprocess.DEVNULL)
    return document, types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=API_DIR, help=f"default: {API_DIR.relative_to(ROOT)}")
    args = parser.parse_args()
    for path in generate(args.out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
