"""`bugagaric-control-plane` / `python -m control_plane`: runs the control plane until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from control_plane.db import SchemaOutOfDate
from control_plane.server import start_control_plane
from control_plane.settings import ControlPlaneSettings


async def serve() -> None:
    try:
        running = await start_control_plane(ControlPlaneSettings())
    except SchemaOutOfDate as exc:
        raise SystemExit(f"cannot start: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logging.getLogger(__name__).info("shutting down")
    await running.stop()


def main() -> None:
    os.umask(0o077)  # the store, logs, spools and outputs it creates: owner-only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
