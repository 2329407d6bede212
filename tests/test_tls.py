"""TLS on every gRPC server and channel, with a CA made on the spot (trustme): a whole system with mutual TLS trains
on an uploaded dataset; TLS servers refuse plaintext clients, clients trusting another CA, and (with client auth)
clients without a certificate from the CA; half a configuration stops a process at start, naming what is wrong."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.tls import CA_ENV, CERT_ENV, CLIENT_AUTH_ENV, KEY_ENV, Tls, TlsConfigError, is_loopback, warn_if_exposed
from tests.helpers.live import LiveControlPlane
from tests.helpers.stack import REPO_ROOT, start_stack
from tests.helpers.tasks import tiny_sft_config, train_until_published
from tests.helpers.tiny_models import write_sft_rows


class Identity:
    """A certificate (with its chain) and its key, as PEM files, and the CA file that trusts it."""

    def __init__(self, directory: Path, ca: trustme.CA, *names: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file, self.cert_file, self.key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
        ca.cert_pem.write_to_path(self.ca_file)
        issued = ca.issue_cert(*names)
        for blob in issued.cert_chain_pems:
            blob.write_to_path(self.cert_file, append=True)
        issued.private_key_pem.write_to_path(self.key_file)

    def tls(self, *, with_cert: bool = True, server_name: str = "") -> Tls:
        return Tls.load(str(self.cert_file) if with_cert else "", str(self.key_file) if with_cert else "",
                        str(self.ca_file), server_name=server_name)

    def env(self, client_auth: bool = False) -> dict[str, str]:
        return {CERT_ENV: str(self.cert_file), KEY_ENV: str(self.key_file), CA_ENV: str(self.ca_file),
                CLIENT_AUTH_ENV: "1" if client_auth else "0"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    return {
        "ours": Identity(root / "ours", ca, "127.0.0.1", "localhost"),
        "named": Identity(root / "named", ca, "control-plane.internal"),  # no IP SAN: needs the name override
        "stranger": Identity(root / "stranger", other_ca, "127.0.0.1", "localhost"),  # signed by another CA
    }


def health(address: str, tls: Tls | None = None) -> str:
    """What the server's grpc.health.v1 answers: "SERVING", ..., or the gRPC code that refused the call."""
    channel = tls.channel(address) if tls is not None else grpc.insecure_channel(address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


# --- settings that cannot work stop the start, naming the variable and the file ------------------------------------


def test_half_a_configuration_is_refused_naming_the_variable_and_the_file(pki, tmp_path):
    ours, stranger = pki["ours"], pki["stranger"]
    with pytest.raises(TlsConfigError, match=f"{CERT_ENV}={ours.cert_file} is set but {KEY_ENV} is not"):
        Tls.load(str(ours.cert_file), "", str(ours.ca_file))
    with pytest.raises(TlsConfigError, match=f"{KEY_ENV}={ours.key_file} is set but {CERT_ENV} is not"):
        Tls.load("", str(ours.key_file))
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(TlsConfigError, match=f"{CA_ENV}={missing} cannot be read: No such file"):
        Tls.load(ca_file=str(missing))
    with pytest.raises(TlsConfigError, match=f"{CERT_ENV}={ours.cert_file} with {KEY_ENV}={stranger.key_file}"):
        Tls.load(str(ours.cert_file), str(stranger.key_file))  # a key that is not the certificate's
    with pytest.raises(TlsConfigError, match=f"{CA_ENV}={ours.key_file}: not PEM CA certificates"):
        Tls.load(ca_file=str(ours.key_file))
    with pytest.raises(TlsConfigError, match=f"{CLIENT_AUTH_ENV}=1 needs {CA_ENV}"):
        Tls.load(str(ours.cert_file), str(ours.key_file), client_auth=True)
    assert not Tls.load().enabled and Tls.load(ca_file=str(ours.ca_file)).enabled


def test_each_process_stops_at_start_on_a_broken_tls_setting(pki, tmp_path):
    import asyncio

    from control_plane.server import start_control_plane
    from control_plane.settings import ControlPlaneSettings
    from gpu_agent.agent import Agent
    from gpu_agent.settings import AgentSettings

    ours = pki["ours"]
    control_plane = ControlPlaneSettings(database_url=f"sqlite:///{tmp_path / 'cp.db'}", control_plane_port=0,
                                         cluster_token="cluster-secret", workspace=tmp_path,
                                         tls_cert_file=str(ours.cert_file), tls_ca_file=str(ours.ca_file))
    with pytest.raises(SystemExit, match=f"TLS settings: {CERT_ENV}={ours.cert_file} is set but {KEY_ENV} is not"):
        asyncio.run(start_control_plane(control_plane))
    # A server needs a certificate: a CA alone secures only what it dials.
    agent = AgentSettings(workspace=str(tmp_path), agent_port=0, control_plane_address="", cluster_token="secret",
                          tls_ca_file=str(ours.ca_file))
    with pytest.raises(SystemExit, match=f"the agent {CERT_ENV} and {KEY_ENV} are not set"):
        asyncio.run(_start_agent(agent))
    with pytest.raises(SystemExit, match=f"{KEY_ENV}={tmp_path / 'gone.pem'} cannot be read"):
        Agent(AgentSettings(workspace=str(tmp_path), tls_cert_file=str(ours.cert_file),
                            tls_key_file=str(tmp_path / "gone.pem")))


async def _start_agent(settings) -> None:
    from gpu_agent.server import start_agent, stop_agent

    server, _, agent = await start_agent(settings)  # reaching here is the failure: stop what started
    await stop_agent(server, agent)


def test_the_gateway_stops_at_start_on_a_broken_tls_setting(pki):
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    ours = pki["ours"]
    with pytest.raises(SystemExit, match=f"{KEY_ENV}={ours.key_file} is set but {CERT_ENV} is not"):
        create_app(GatewaySettings(tls_key_file=str(ours.key_file)))


def test_plaintext_on_a_non_loopback_address_is_warned_about(caplog):
    assert all(map(is_loopback, ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.1.2.3", "control-plane"]))
    with caplog.at_level(logging.WARNING, logger="protos.tls"):
        assert not warn_if_exposed("127.0.0.1", "127.0.0.1:50051", "control plane")
        assert warn_if_exposed("0.0.0.0", "0.0.0.0:50061", "agent")
    assert [r.getMessage() for r in caplog.records] == [
        f"the agent serves plaintext gRPC on 0.0.0.0:50061, a non-loopback address: credentials and data cross the "
        f"network in the clear (set {CERT_ENV} and {KEY_ENV}, see README 'TLS')"]


# --- server TLS: who gets in ------------------------------------------------------------------------------------------


def test_a_tls_control_plane_refuses_plaintext_and_other_cas_and_checks_the_name(pki, tmp_path):
    named, stranger = pki["named"], pki["stranger"]
    plane = LiveControlPlane(tmp_path, tls_cert_file=str(named.cert_file), tls_key_file=str(named.key_file)).start()
    try:
        address = plane.address  # 127.0.0.1: not a name in its certificate
        assert health(address, named.tls(with_cert=False, server_name="control-plane.internal")) == "SERVING"
        assert health(address, named.tls(with_cert=False)) == "UNAVAILABLE"  # the name does not match
        assert health(address) == "UNAVAILABLE"  # plaintext
        assert health(address, stranger.tls(server_name="control-plane.internal")) == "UNAVAILABLE"  # another CA
    finally:
        plane.stop()


# --- a whole system with mutual TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_llama_dir, pki):
    workspace = tmp_path_factory.mktemp("tls-workspace")
    shutil.copytree(tiny_llama_dir, workspace / "models" / "tiny-llama")
    running = start_stack(workspace, slots=1, extra_env=pki["ours"].env(client_auth=True))
    yield running
    running.stop()


def test_a_mutual_tls_system_registers_uploads_trains_and_publishes(stack, tmp_path):
    # start_stack waited for /api/health through the gateway (its channel: TLS, presenting its certificate) to show
    # the agent alive: it registered over mutual TLS.
    assert "serves TLS" in stack.log("control_plane") and "serves TLS" in stack.log("agent")
    write_sft_rows(tmp_path / "train.jsonl", 16)
    with httpx.Client(base_url=stack.base_url, timeout=60,
                      headers={"authorization": f"Bearer {stack.admin_token}"}) as api:
        uploaded = api.post("/api/finetune/datasets", data={"type": "sft"},
                            files={"file": ("train.jsonl", (tmp_path / "train.jsonl").read_bytes(), "application/jsonl")})
        assert uploaded.status_code == 201, uploaded.text
        # The control plane dials the agent to launch; the agent's fetch step fetches the dataset from the control
        # plane; the control plane pulls the trained model from the agent to publish it: every hop over mutual TLS.
        task = train_until_published(api, "sft", tiny_sft_config(train_data_path=f"dataset:{uploaded.json()['id']}"))
        assert task["published_model_sha256"]
        assert "inputs ready: dataset:" in api.get(f"/api/finetune/tasks/{task['id']}/logs",
                                                      params={"after_seq": 0, "limit": 10000}).text


def test_with_client_auth_only_certificates_from_the_ca_get_in(stack, pki):
    ours, stranger = pki["ours"], pki["stranger"]
    agent_address = f"127.0.0.1:{stack.agent_envs['agent']['BUGAGARIC_AGENT_PORT']}"
    for address in (stack.control_plane_address, agent_address):
        assert health(address, ours.tls()) == "SERVING"  # a certificate from the CA
        assert health(address) == "UNAVAILABLE"  # plaintext
        assert health(address, ours.tls(with_cert=False)) == "UNAVAILABLE"  # TLS without a client certificate
        assert health(address, stranger.tls()) == "UNAVAILABLE"  # trusting another CA, its certificate from it
        foreign_cert = Tls.load(str(stranger.cert_file), str(stranger.key_file), str(ours.ca_file))
        assert health(address, foreign_cert) == "UNAVAILABLE"  # trusts the right CA, but its certificate is foreign


def test_the_health_probe_dials_with_the_same_settings(stack, pki):
    env = {**os.environ, **pki["ours"].env(client_auth=True), "PYTHONPATH": str(REPO_ROOT)}
    probe = subprocess.run([sys.executable, "-m", "protos.health_probe", stack.control_plane_address],
                           env=env, capture_output=True, text=True, timeout=60)
    assert (probe.returncode, probe.stdout.strip()) == (0, "SERVING"), probe.stderr
