"""What every Sluice gRPC service process does around its server: log setup, `--grace`, and waiting for SIGTERM or
SIGINT before a graceful stop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from services.common.settings import Settings


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_service(description: str, serve: Callable[[Settings, float], Awaitable[None]], *, default_grace: float,
                grace_help: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--grace", type=float, default=default_grace, help=grace_help)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(Settings.from_env(), args.grace))
