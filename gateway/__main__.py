"""`bugagaric-gateway` / `python -m gateway`: serve the REST gateway with uvicorn, and the OpenAI-compatible API
(gateway/openai_api) on BUGAGARIC_OPENAI_PORT beside it, in the same process and event loop."""

from __future__ import annotations

import asyncio
import logging
import os

import uvicorn

from gateway import log_redaction
from gateway.app import create_app
from gateway.openai_api.app import create_openai_app
from gateway.settings import GatewaySettings


def uvicorn_config(settings: GatewaySettings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        # request.client becomes the X-Forwarded-For client only behind a trusted proxy (the console's); anyone else
        # cannot choose the address the control plane's per-address login limit counts under.
        proxy_headers=True,
        forwarded_allow_ips=settings.gateway_trusted_proxies,
    )


def build_server(settings: GatewaySettings) -> uvicorn.Server:
    config = uvicorn_config(settings)  # configures uvicorn's loggers, so the filter goes on after it
    log_redaction.install()
    return uvicorn.Server(config)


def build_openai_server(settings: GatewaySettings) -> uvicorn.Server | None:
    """The OpenAI-compatible API's server, or None when BUGAGARIC_OPENAI_PORT is 0 (off)."""
    if not settings.openai_port:
        return None
    config = uvicorn.Config(create_openai_app(settings), host=settings.gateway_host, port=settings.openai_port,
                            proxy_headers=True, forwarded_allow_ips=settings.gateway_trusted_proxies)
    log_redaction.install()
    return uvicorn.Server(config)


async def serve_all(servers: list[uvicorn.Server]) -> None:
    """Runs the servers together; when one ends (a signal, or a port it could not bind), the others stop too."""

    async def serve(server: uvicorn.Server) -> None:
        try:
            await server.serve()
        finally:
            for other in servers:
                other.should_exit = True

    await asyncio.gather(*(serve(server) for server in servers))


def main() -> None:
    os.umask(0o077)  # the store, logs, spools and outputs it creates: owner-only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = GatewaySettings()
    servers = [server for server in (build_server(settings), build_openai_server(settings)) if server is not None]
    # The event loop uvicorn's own Server.run() would pick (uvloop where installed).
    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(serve_all(servers))


if __name__ == "__main__":
    main()
