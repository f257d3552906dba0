"""A TCP proxy on 127.0.0.1 that can cut every connection and refuse new ones, to fake a database outage.

The proxy runs its own asyncio event loop in a daemon thread, so the caller stays
synchronous. During an outage the listening socket is closed, so clients get "connection
refused" exactly as they would from a stopped PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 64 * 1024
CALL_TIMEOUT_S = 10.0


@dataclass
class ProxyCounters:
    accepted: int = 0
    cut: int = 0
    outages: int = 0


class TcpProxy:
    """Forward ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int, listen_port: int) -> None:
        self.target_port = target_port
        self.listen_port = listen_port
        self.counters = ProxyCounters()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())
        logger.info("proxy listening on %s:%d, forwarding to %s:%d", LOOPBACK, self.listen_port, LOOPBACK, self.target_port)

    def begin_outage(self) -> int:
        """Stop listening and close every open connection; returns how many connections were cut."""
        cut = self._call(self._cut())
        self.counters.outages += 1
        logger.info("proxy outage began: %d connections cut, new connections refused", cut)
        return cut

    def end_outage(self) -> None:
        self._call(self._listen())
        logger.info("proxy outage ended: listening again on %s:%d", LOOPBACK, self.listen_port)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._cut())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CALL_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=CALL_TIMEOUT_S)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, LOOPBACK, self.listen_port, reuse_address=True)

    async def _cut(self) -> int:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        self._writers.clear()
        self.counters.cut += len(writers)
        return len(writers)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.counters.accepted += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError as error:
            logger.warning("proxy could not reach %s:%d: %s", LOOPBACK, self.target_port, error)
            client_writer.transport.abort()
            return

        if self._server is None:
            # An outage began while this connection was being opened.
            client_writer.transport.abort()
            server_writer.transport.abort()
            return

        self._writers.update((client_writer, server_writer))
        try:
            await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        finally:
            for writer in (client_writer, server_writer):
                self._writers.discard(writer)
                writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Either side closing, or an outage aborting the transports, ends both directions.
    try:
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
