"""One node of a multi-node attempt: torchrun with the c10d rendezvous (PyTorch's elastic launcher; the platform adds
no distributed runtime of its own).

Node 0's agent chooses the rendezvous port (within BUGAGARIC_GANG_PORT_RANGE when set, so a firewall between GPU hosts
can allow just that range) and hosts the rendezvous store there; every node joins it with a rendezvous id of its
attempt, so a straggler of an earlier attempt can never join a later one. Every rank's lines carry their node and
rank; only global rank 0 reports metrics and writes the model (trainers.common.graceful_stop.is_main_process).
"""

from __future__ import annotations

import dataclasses
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from protos.addresses import joined

# How long node 0 waits for the others to join before the attempt fails (the scheduler launched them all at once).
JOIN_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class GangSpec:
    nnodes: int
    node_rank: int
    rdzv_id: str
    rdzv_host: str
    rdzv_port: int
    resume_subpath: str = ""  # the checkpoint to resume from, inside the task's output directory on this host

    @classmethod
    def from_proto(cls, message) -> "GangSpec | None":
        """None unless the launch request is for one node of several."""
        if message is None or message.nnodes <= 1:
            return None
        return cls(message.nnodes, message.node_rank, message.rdzv_id, message.rdzv_host, message.rdzv_port,
                   message.resume_subpath)

    def with_port(self, port: int) -> "GangSpec":
        return dataclasses.replace(self, rdzv_port=port)

    def resume_from(self, output_dir: Path) -> str:
        """This host's copy of the checkpoint (every node saved its own: save_on_each_node); "" for none."""
        return str(output_dir / self.resume_subpath) if self.resume_subpath else ""


class BadGang(ValueError):
    pass


def check(spec: GangSpec) -> None:
    if not 0 <= spec.node_rank < spec.nnodes:
        raise BadGang(f"gang: node_rank {spec.node_rank} is outside 0..{spec.nnodes - 1}")
    if not spec.rdzv_id or not spec.rdzv_host:
        raise BadGang("gang: rdzv_id and rdzv_host are required")
    if spec.node_rank > 0 and not 0 < spec.rdzv_port < 65536:
        raise BadGang("gang: a node other than node 0 needs node 0's rdzv_port")
    if spec.resume_subpath and (spec.resume_subpath.startswith("/") or ".." in Path(spec.resume_subpath).parts):
        raise BadGang("gang: resume_subpath must lie inside the task's output directory")


def choose_port(port_range: str = "") -> int:
    """A free TCP port on every interface (the other nodes connect from their hosts): the first free one of
    `port_range` ("29400-29499"), or any the kernel gives."""
    candidates = [0]
    if port_range:
        low, _, high = port_range.partition("-")
        candidates = list(range(int(low), int(high or low) + 1))
    for port in candidates:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise BadGang(f"no free port in BUGAGARIC_GANG_PORT_RANGE={port_range}")


def torchrun_argv(spec: GangSpec, nproc: int, entry_module: str, config_path: Path, local_addr: str) -> list[str]:
    """torchrun for this node. `local_addr`: this agent's advertised host, which the rendezvous hands to the others
    (and which becomes MASTER_ADDR when this node holds rank 0)."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={spec.nnodes}", f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d", f"--rdzv_endpoint={joined(spec.rdzv_host, spec.rdzv_port)}",
        f"--rdzv_id={spec.rdzv_id}",
        f"--rdzv_conf=is_host={1 if spec.node_rank == 0 else 0},join_timeout={JOIN_TIMEOUT_SECONDS}",
        f"--local_addr={local_addr}",
        "--max_restarts=0",  # a failed rank fails the attempt; the control plane requeues the whole gang
        "--tee=3",  # every rank's output through torchrun's own, each line prefixed (TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE)
        "-m", entry_module, "--config", str(config_path),
    ]


def environment(spec: GangSpec) -> dict[str, str]:
    return {
        "BUGAGARIC_GANG_NODES": str(spec.nnodes),
        "BUGAGARIC_GANG_NODE": str(spec.node_rank),
        "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[rank${rank}]:",  # ingestion adds the node
        "OMP_NUM_THREADS": "1",
    }
