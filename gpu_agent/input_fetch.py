"""`python -m gpu_agent.input_fetch --plan PLAN.json -- TRAINER ARGV...`: the fetch step in front of a trainer.

The supervisor runs it as the attempt's process, so what it prints reaches the task log, a stop kills it like a
trainer, and an agent restart does not lose it. It fetches every input of the plan into the agent's cache
(gpu_agent.blob_cache) from the control plane's AgentRegistry.FetchBlob, then execs the trainer with
`BUGAGARIC_INPUT_FILES` = {ref: local path}. The trainer inherits the cache locks on its inputs (they are held until
it exits, so nothing it reads is evicted), never the cluster token: that comes in a 0600 file next to the plan, read
and deleted before anything else.

A fetch that cannot succeed prints one `error: ...` line on stderr and exits EXIT_INPUT_UNAVAILABLE.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from gpu_agent.blob_cache import BlobCache, CacheError, Held, InputSpec, TransferBroken, TransferRefused
from gpu_agent.process_runner import environment_without_secrets

if TYPE_CHECKING:
    from protos.tls import Tls

PLAN_FILE = "inputs.json"
TOKEN_FILE = "cluster-token"
EXIT_INPUT_UNAVAILABLE = 75  # EX_TEMPFAIL: no trainer uses it; the agent reports it as `input_unavailable`
INPUTS_ENV = "BUGAGARIC_INPUT_FILES"  # = trainers.paths.INPUTS_ENV (not imported: this step stays light)
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


def specs_from_plan(items: Sequence[dict]) -> list[InputSpec]:
    return [InputSpec(ref=str(i["ref"]), sha256=str(i["sha256"]), size=int(i.get("size") or 0),
                      suffix=str(i.get("suffix") or ""), archive=bool(i.get("archive"))) for i in items]


def write_plan(directory: Path, *, control_plane_address: str, cluster_token: str, cache_dir: Path,
               cache_max_bytes: int, inputs: Sequence[InputSpec], tls: Tls | None = None) -> Path:
    """Writes the plan and the token file (owner-only) into the attempt directory; returns the plan's path. `tls`:
    the agent's TLS settings (file paths), which the fetch step dials the control plane with."""
    directory.mkdir(parents=True, exist_ok=True)
    token_file = directory / TOKEN_FILE
    handle = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(cluster_token)
    plan = {
        "control_plane_address": control_plane_address, "token_file": str(token_file), "cache_dir": str(cache_dir),
        "cache_max_bytes": cache_max_bytes, "tls": tls.files() if tls is not None else {},
        "inputs": [{"ref": s.ref, "sha256": s.sha256, "size": s.size, "suffix": s.suffix, "archive": s.archive}
                   for s in inputs],
    }
    path = directory / PLAN_FILE
    path.write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return path


def command(plan_path: Path) -> list[str]:
    """The argv prefix the trainer's argv follows."""
    return [sys.executable, "-m", "gpu_agent.input_fetch", "--plan", str(plan_path), "--"]


class GrpcTransfer:
    """AgentRegistry.FetchBlob on a channel of grpc's threaded API (TLS when the agent's is on), the cluster token as
    the bearer token."""

    def __init__(self, address: str, token: str, tls: Tls | None = None):
        import grpc

        from protos import control_plane_pb2_grpc
        from protos.tls import PLAINTEXT

        self._grpc = grpc
        self._channel = (tls or PLAINTEXT).channel(address, options=_CHANNEL_OPTIONS)
        self._stub = control_plane_pb2_grpc.AgentRegistryStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        grpc_codes = grpc.StatusCode
        # Retrying these would get the same answer.
        self._refused = {grpc_codes.NOT_FOUND, grpc_codes.PERMISSION_DENIED, grpc_codes.UNAUTHENTICATED,
                         grpc_codes.INVALID_ARGUMENT, grpc_codes.OUT_OF_RANGE, grpc_codes.UNIMPLEMENTED}

    def chunks(self, sha256: str, offset: int) -> Iterator[tuple[int, bytes, int]]:
        from protos import control_plane_pb2

        call = self._stub.FetchBlob(control_plane_pb2.FetchBlobRequest(sha256=sha256, offset=offset),
                                    metadata=self._metadata)
        try:
            for chunk in call:
                yield chunk.offset, chunk.data, chunk.total_size
        except self._grpc.RpcError as exc:
            message = f"{exc.code().name}: {exc.details()}"
            if exc.code() in self._refused:
                raise TransferRefused(message) from None
            raise TransferBroken(message) from None
        finally:
            call.cancel()  # a no-op after the end; stops the server's stream when the reader gives up early

    def close(self) -> None:
        self._channel.close()


def fetch_all(specs: Sequence[InputSpec], cache: BlobCache, transfer) -> list[Held]:
    """Every input held in the cache, in order; on failure, those already held are released."""
    held: list[Held] = []
    try:
        for spec in specs:
            held.append(cache.get(spec, transfer))
    except BaseException:
        for item in held:
            item.close()
        raise
    return held


def inputs_env(held: Sequence[Held]) -> dict[str, str]:
    return {INPUTS_ENV: json.dumps({item.spec.ref: str(item.path) for item in held})}


def _say(line: str) -> None:
    print(line, flush=True)


def _take_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CacheError(f"the cluster token file {path} is gone (was this attempt started twice?)") from None
    path.unlink(missing_ok=True)  # the trainer this process becomes must not find it
    return token


def _parse(argv: list[str]) -> tuple[Path, list[str]]:
    if len(argv) < 4 or argv[0] != "--plan" or argv[2] != "--":
        sys.stderr.write("usage: python -m gpu_agent.input_fetch --plan PLAN.json -- ARGV...\n")
        raise SystemExit(2)
    return Path(argv[1]), argv[3:]


def prepare(plan_path: Path) -> tuple[list[Held], dict[str, str]] | int:
    """Fetches the plan's inputs into the cache: (the held inputs, the trainer's environment), or the exit code of a
    fetch that failed (its `error:` line printed). Shared by the cold path (main, which execs the trainer) and the
    warm pool (gpu_agent.warm_trainer, which runs it in a process forked for it and takes the locks over)."""
    try:
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        token = _take_token(Path(plan["token_file"]))
        specs = specs_from_plan(plan["inputs"])
        cache = BlobCache(Path(plan["cache_dir"]), int(plan["cache_max_bytes"]), say=_say)
        from protos.tls import Tls

        tls = Tls.load(**plan.get("tls", {}))  # a broken setting is a ValueError: reported below like a bad plan
        transfer = GrpcTransfer(plan["control_plane_address"], token, tls)
        try:
            held = fetch_all(specs, cache, transfer)
        finally:
            transfer.close()
    except CacheError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_INPUT_UNAVAILABLE
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: the input plan {plan_path} cannot be used: {exc}", file=sys.stderr, flush=True)
        return EXIT_INPUT_UNAVAILABLE
    _say(f"inputs ready: {', '.join(item.spec.ref for item in held) or 'none'}; starting the trainer")
    return held, environment_without_secrets(inputs_env(held))


def main(argv: list[str] | None = None) -> int:
    plan_path, trainer = _parse(sys.argv[1:] if argv is None else argv)
    prepared = prepare(plan_path)
    if isinstance(prepared, int):
        return prepared
    try:
        os.execvpe(trainer[0], trainer, prepared[1])
    except OSError as exc:
        print(f"error: could not start the trainer {trainer[0]}: {exc}", file=sys.stderr, flush=True)
    return 127


if __name__ == "__main__":
    sys.exit(main())
