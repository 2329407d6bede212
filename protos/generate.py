"""Regenerates the committed Python code from the .proto files.

Run from anywhere: `python -m protos.generate` (or `python protos/generate.py`). Imports in the generated code are
`from protos import common_pb2`, which is why protoc runs with the repository root as its include path.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTOS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTOS_DIR.parent
PROTO_FILES = sorted(p.name for p in PROTOS_DIR.glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Writes the *_pb2.py, *_pb2.pyi and *_pb2_grpc.py files into out_dir/protos/."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    (out_dir / "protos").mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(f"protos/{name}" for name in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


if __name__ == "__main__":
    generate(REPO_ROOT)
    print(f"generated code for {', '.join(PROTO_FILES)}", file=sys.stderr)
