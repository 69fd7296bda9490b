"""A loopback TCP relay that counts request/response round trips between a client and a server,
and can cut a connection part-way through what the client sends (a torn write).

A round trip starts each time the client sends after the server last spoke (or first). For a
request/response protocol (RESP, the PostgreSQL wire protocol) that is exactly the number of
times the client had to wait for the server.
"""

from __future__ import annotations

import asyncio
import contextlib


class RoundTripRelay:
    """Relay ``127.0.0.1:<port>`` to ``host:port`` and count round trips per connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.round_trips = 0
        self.connections = 0
        self.bytes_sent = 0  # client -> server, all connections
        self._cut_budget: int | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Start listening; returns the relay's port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def cut_after(self, sent_bytes: int | None) -> None:
        """Forward only ``sent_bytes`` more client bytes, then drop the connection, and drop every
        connection that sends anything more (a client's reconnect included) until the cut is
        lifted with None."""
        self._cut_budget = sent_bytes

    async def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        state = {"last": "s2c"}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str) -> None:
            try:
                while data := await src.read(65536):
                    if direction == "c2s" and state["last"] != "c2s":
                        self.round_trips += 1
                    state["last"] = direction
                    if direction == "c2s":
                        budget = self._cut_budget
                        if budget is not None and len(data) > budget:
                            self._cut_budget = 0
                            dst.write(data[:budget])
                            await dst.drain()
                            self.bytes_sent += budget
                            writer.close()  # the client sees its connection drop mid-request
                            return
                        if budget is not None:
                            self._cut_budget = budget - len(data)
                        self.bytes_sent += len(data)
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        tasks = [
            asyncio.ensure_future(pump(reader, up_writer, "c2s")),
            asyncio.ensure_future(pump(up_reader, writer, "s2c")),
        ]
        self._tasks.update(tasks)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(*tasks)
        self._tasks.difference_update(tasks)
