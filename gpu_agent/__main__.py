"""`bugagaric-agent` / `python -m gpu_agent`: runs one GPU agent until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os


def main() -> None:
    os.umask(0o077)  # the store, logs, spools and outputs it creates: owner-only
    logging.basicConfig(
        level=os.environ.get("BUGAGARIC_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from gpu_agent.server import serve

    asyncio.run(serve())


if __name__ == "__main__":
    main()
