"""`bugagaric-gateway` / `python -m gateway`: serve the REST gateway with uvicorn."""

from __future__ import annotations

import logging
import os

import uvicorn

from gateway import log_redaction
from gateway.app import create_app
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


def main() -> None:
    os.umask(0o077)  # the store, logs, spools and outputs it creates: owner-only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_server(GatewaySettings()).run()


if __name__ == "__main__":
    main()
