"""The committed generated code is exactly what grpc_tools.protoc produces from the .proto files today."""

from __future__ import annotations

from pathlib import Path

from protos.generate import PROTOS_DIR, generate


def test_committed_code_matches_protoc(tmp_path: Path):
    generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "protos").iterdir() if p.is_file()}
    assert fresh, "protoc generated nothing"
    committed = {name: (PROTOS_DIR / name).read_bytes() for name in fresh if (PROTOS_DIR / name).exists()}
    missing = sorted(set(fresh) - set(committed))
    stale = sorted(name for name in committed if committed[name] != fresh[name])
    assert not missing and not stale, f"regenerate with `python -m protos.generate`: missing {missing}, stale {stale}"


def test_every_proto_has_generated_code():
    for proto in PROTOS_DIR.glob("*.proto"):
        assert (PROTOS_DIR / f"{proto.stem}_pb2.py").exists()
        assert (PROTOS_DIR / f"{proto.stem}_pb2_grpc.py").exists()
