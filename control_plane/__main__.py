"""`bugagaric-control-plane` / `python -m control_plane`: runs the control plane until SIGTERM or SIGINT (after bringing
its store to the newest schema). `bugagaric-control-plane migrate` only brings the store up to date, and says from which
revision to which."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from control_plane.db import SchemaOutOfDate, make_engine
from control_plane.server import start_control_plane
from control_plane.settings import ControlPlaneSettings
from control_plane.store_upgrade import upgrade_store


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


def migrate() -> None:
    """Upgrades the store at BUGAGARIC_DATABASE_URL to the newest schema, without starting the control plane."""
    settings = ControlPlaneSettings()
    engine = make_engine(settings.database_url, upgrade=False)
    try:
        upgrade = upgrade_store(engine)
    except SchemaOutOfDate as exc:
        raise SystemExit(f"cannot migrate: {exc}") from None
    finally:
        engine.dispose()
    print(f"{engine.url.render_as_string(hide_password=True)}: {upgrade.describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bugagaric-control-plane", description=__doc__)
    parser.add_argument("command", nargs="?", choices=("serve", "migrate"), default="serve",
                        help="serve (the default): run the control plane; migrate: upgrade the store and exit")
    command = parser.parse_args().command
    os.umask(0o077)  # the store, logs, spools and outputs it creates: owner-only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if command == "migrate":
        migrate()
        return
    asyncio.run(serve())


if __name__ == "__main__":
    main()
