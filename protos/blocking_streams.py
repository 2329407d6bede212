"""For both gRPC servers: a blocking iterator (file reads, a tar built on the fly) streamed from a worker thread, so
that a big file never holds the event loop."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


async def off_the_loop(items: Iterator[T]) -> AsyncIterator[T]:
    """Each item of `items` taken in a worker thread; a generator is closed at the end, also when the reader went
    away mid-stream (its file with it)."""
    try:
        while (item := await asyncio.to_thread(next, items, _DONE)) is not _DONE:
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
