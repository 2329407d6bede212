"""`python -m protos.health_probe HOST:PORT`: exit 0 when the gRPC server there answers SERVING to grpc.health.v1.

What the compose file's healthchecks run inside the images (no separate grpc_health_probe binary to install). The
health service is open without credentials on both servers; over TLS the probe uses the process's own TLS settings
(the same BUGAGARIC_TLS_* variables the services read), so it checks the server the way its clients reach it.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def probe(address: str, service: str = "", timeout: float = 3.0, credentials: grpc.ChannelCredentials | None = None,
          options: tuple = ()) -> str:
    """The status name the server reports for `service` ("SERVING", "NOT_SERVING", ...), or "UNREACHABLE"."""
    channel = grpc.secure_channel(address, credentials, options=options) if credentials else grpc.insecure_channel(address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _tls_from_environment() -> tuple[grpc.ChannelCredentials | None, tuple]:
    try:
        from protos import tls
    except ImportError:  # a build without TLS support: plaintext only
        return None, ()
    return tls.channel_credentials_from_environment()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.health_probe", description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT of a control plane or agent")
    parser.add_argument("--service", default="", help="a service name; '' (default) is the server as a whole")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    credentials, options = _tls_from_environment()
    status = probe(args.address, args.service, args.timeout, credentials, options)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
