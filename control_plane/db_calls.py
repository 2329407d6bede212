"""Store calls off the event loop: every synchronous database call an async handler, the scheduler or ingestion makes
goes through `in_db_thread`, which runs it on a small, bounded pool of threads, so one slow query never stalls the
loop that serves every other client. The pool's size bounds the store connections the control plane uses at once."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

DB_THREADS_ENV = "BUGAGARIC_DB_THREADS"
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        size = max(1, int(os.environ.get(DB_THREADS_ENV, "4")))
        _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="store")
    return _executor


async def in_db_thread(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` on a store thread (context variables carried over, as asyncio.to_thread does)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_pool(), call)
