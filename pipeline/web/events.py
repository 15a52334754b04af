"""The web view's server-sent events (`GET /events`): one producer, a bounded queue per client, and
clients that stop reading dropped.

The producer reads the state every `EVENT_EVERY_S` and, when it changed, encodes it once and offers
those bytes to every client's queue. A queue holds `EVENT_QUEUE` events; as each event is the whole
state, a full queue loses its oldest one (the client is counted as lagging) and the newest goes in.
Each client's writer sends its queue's events in order (a comment line every `PING_S` on a quiet
stream). A send that the connection has not taken within `SEND_TIMEOUT_S` (the client stopped
reading and the buffers between it and the server are full) drops the client: the connection is
reset, not closed (a graceful close would keep the unsent bytes until the client reads them: for
ever), the client's queue is freed, and the drop is logged and counted (`EventHub.dropped`, shown by
/api/state).

So what the server holds for a client that never reads is bounded: `EVENT_QUEUE` references to the
shared encoded events, the transport's write buffer (asyncio's 64 KB high-water mark plus the event
being written: the server's `send` waits while the buffer is over the mark, and that wait is what
the timeout measures) and the kernel's unsent bytes (capped by `TCP_NOTSENT_LOWAT`, which
`pipeline.web.server` sets on its socket).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Hashable
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

EVENT_EVERY_S = 0.5  # how often the state is read; an event goes out only when it changed
EVENT_QUEUE = 4  # events waiting per client; a full queue loses its oldest
SEND_TIMEOUT_S = 5.0  # a client whose connection takes no write for this long is dropped (docs/streaming.md)
PING_S = 15.0  # a comment on a quiet stream, so that proxies keep it open
PING = b": ping\n\n"
END = b""  # queued by `close`: the stream ends
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
           (b"x-accel-buffering", b"no")]

Reset = Callable[[Scope], bool]  # resets the connection of a request at once; False where it cannot


def encode(state: dict[str, Any]) -> bytes:
    return b"event: state\ndata: " + json.dumps(state, separators=(",", ":")).encode() + b"\n\n"


class EventClient:
    """One `/events` connection: its queue of encoded events, newest last."""

    def __init__(self, peer: str, size: int) -> None:
        self.peer = peer
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)
        self.lost = 0  # events its full queue lost


class EventHub:
    """The `/events` endpoint (an ASGI app) and its clients. `state`: what an event carries; `key`: a
    value of the state that changes when it does; `reset`: how to reset a dropped client's connection
    (`pipeline.web.server` gives one; without it the ASGI server closes the connection its own way).
    The timings and the queue's size default to this module's constants, read when the hub is made."""

    def __init__(self, state: Callable[[], dict[str, Any]], key: Callable[[dict[str, Any]], Hashable],
                 reset: Reset | None = None, *, every_s: float | None = None, queue_events: int | None = None,
                 send_timeout_s: float | None = None) -> None:
        self.state, self.key, self.reset = state, key, reset
        self.every_s = EVENT_EVERY_S if every_s is None else every_s
        self.queue_events = EVENT_QUEUE if queue_events is None else queue_events
        self.send_timeout_s = SEND_TIMEOUT_S if send_timeout_s is None else send_timeout_s
        self.clients: set[EventClient] = set()
        self.dropped = 0  # clients dropped for not taking a write within the timeout
        self.lagged = 0  # events lost to full queues, all clients together
        self.closed = False
        self._latest: bytes | None = None
        self._producer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def counts(self) -> dict[str, int]:
        return {"clients": len(self.clients), "dropped_slow": self.dropped, "lagged_events": self.lagged}

    def close(self) -> None:
        """Ends every stream with a complete response, so that the server stops at once (from any thread)."""
        self.closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._end_all)

    def _end_all(self) -> None:
        for client in list(self.clients):
            _offer(client, END)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        client = self._join(scope)
        try:
            async with anyio.create_task_group() as tasks:
                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tasks.cancel_scope.cancel()

                tasks.start_soon(until_disconnect)
                if not await self._write(client, send):
                    self._drop(client, scope)
                    if self.reset is not None and self.reset(scope):
                        with anyio.move_on_after(1.0):  # the reset comes back as a disconnect, then we are done
                            await anyio.sleep_forever()
                tasks.cancel_scope.cancel()
        finally:
            self.clients.discard(client)

    def _join(self, scope: Scope) -> EventClient:
        host, port = scope.get("client") or ("?", 0)
        client = EventClient(f"{host}:{port}", self.queue_events)
        self._loop = asyncio.get_running_loop()
        if self.closed:
            client.queue.put_nowait(END)
        elif self._producer is None or self._producer.done():
            self._producer = self._loop.create_task(self._produce())  # its first event: at once
        elif self._latest is not None:
            client.queue.put_nowait(self._latest)
        self.clients.add(client)
        return client

    async def _write(self, client: EventClient, send: Send) -> bool:
        """Sends the client's events: True when the stream ends (`close`), False when a send is not
        taken within the timeout."""
        message: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": HEADERS}
        while True:
            with anyio.move_on_after(self.send_timeout_s) as waited:
                await send(message)
            if waited.cancelled_caught:
                return False
            if not message.get("more_body", True):
                return True
            body = PING
            with anyio.move_on_after(PING_S):
                body = await client.queue.get()
            message = {"type": "http.response.body", "body": body, "more_body": body != END}

    def _drop(self, client: EventClient, scope: Scope) -> None:
        self.clients.discard(client)
        while not client.queue.empty():
            client.queue.get_nowait()
        self.dropped += 1
        log.warning("web view: dropped /events client %s: its connection took no write for %.1f s (%d dropped "
                    "so far)", client.peer, self.send_timeout_s, self.dropped)

    async def _produce(self) -> None:
        """While there are clients: the state, encoded once, offered to every client's queue when it changed."""
        seen: Hashable = None
        while self.clients:
            try:
                current = self.state()
                key = self.key(current)
                if key != seen:
                    seen, self._latest = key, encode(current)
                    for client in list(self.clients):
                        self.lagged += _offer(client, self._latest)
            except Exception:  # a bad read of the state costs one event, not the stream
                log.exception("web view: the state for /events could not be read")
            await asyncio.sleep(self.every_s)
        self._latest = None


def _offer(client: EventClient, event: bytes) -> int:
    """Queues `event` for `client`; a full queue loses its oldest (the newest state says all it said):
    returns how many events were lost (0 or 1)."""
    lost = 0
    if client.queue.full():
        client.queue.get_nowait()
        client.lost += 1
        lost = 1
    client.queue.put_nowait(event)
    return lost
