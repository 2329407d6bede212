"""A client-streaming call driven from asyncio through grpc's threaded API.

Why not grpc.aio: when the server ends a client-streaming call early (a refused header, a bad token, a file over the
limit) while the client is still writing, grpc.aio fails the pending write with INTERNAL "Internal error from Core"
and reports that instead of the server's status (grpc/grpc#36066): a user would get a 500 for a wrong `type`. The
threaded API reports the server's status. grpc's own thread pulls the requests from a queue that write() fills, at
most IN_FLIGHT messages ahead of it, so memory stays bounded and the body is read no faster than it is sent.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import grpc

IN_FLIGHT = 2
_END = object()


def as_aio_error(exc: grpc.RpcError) -> grpc.aio.AioRpcError:
    """The same failure as grpc.aio would raise it, for the gateway's one error mapping."""
    return grpc.aio.AioRpcError(exc.code(), grpc.aio.Metadata(*(exc.initial_metadata() or ())),
                                grpc.aio.Metadata(*(exc.trailing_metadata() or ())), exc.details(),
                                exc.debug_error_string())


class ThreadedUpload:
    """write() each request in order, then finish() for the reply; cancel() to abandon it (idempotent). Once the
    server has ended the call, write() and finish() raise its status as grpc.aio.AioRpcError."""

    def __init__(self, method: grpc.StreamUnaryMultiCallable, metadata: Any) -> None:
        self._loop = asyncio.get_running_loop()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._room = asyncio.Semaphore(IN_FLIGHT)
        self._ended: asyncio.Future = self._loop.create_future()
        self._call = method.future(self._pull(), metadata=metadata)
        self._call.add_done_callback(self._on_done)

    def _pull(self):
        """The request iterator, run by grpc's thread."""
        while (message := self._requests.get()) is not _END:
            try:
                self._loop.call_soon_threadsafe(self._room.release)
            except RuntimeError:  # the event loop has closed
                return
            yield message

    def _on_done(self, call: grpc.Future) -> None:  # in grpc's thread
        try:
            self._loop.call_soon_threadsafe(self._settle, call)
        except RuntimeError:  # the event loop has closed: nobody waits for this call any more
            pass

    def _settle(self, call: grpc.Future) -> None:
        if not self._ended.done():
            self._ended.set_result(call)

    async def write(self, message: Any) -> None:
        room = asyncio.ensure_future(self._room.acquire())
        await asyncio.wait({room, self._ended}, return_when=asyncio.FIRST_COMPLETED)
        if not room.done():  # the server has ended the call: its status says why
            room.cancel()
            self._outcome()
            raise RuntimeError("the control plane answered before the upload was complete")
        self._requests.put(message)

    async def finish(self) -> Any:
        self._requests.put(_END)
        await self._ended
        return self._outcome()

    def cancel(self) -> None:
        if not self._call.done():
            self._call.cancel()
        self._requests.put(_END)  # frees grpc's thread if it waits for a request

    def _outcome(self) -> Any:
        call = self._ended.result()
        try:
            return call.result()
        except grpc.RpcError as exc:
            raise as_aio_error(exc) from None
