"""Resumable streams: the event store behind streamable HTTP's Last-Event-ID.

With an event store the SDK gives every SSE event an id, opens each response stream with a
priming event (SEP-1699: an id, no data, and our `retry` hint), and when a client whose
stream broke reconnects with `Last-Event-ID`, replays what that stream missed and goes on
with it live. So an `execute` that waits for minutes survives a network blip: the progress
and the result sent while the client was away are replayed.

Kept in memory and bounded: the oldest events go first once the store holds more than
MAX_EVENTS events or MAX_BYTES of messages. A client that comes back after its events were
dropped gets nothing replayed (its call then fails, and the task is still readable by id).
"""

from __future__ import annotations

from collections import OrderedDict

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage

MAX_EVENTS = 10_000
MAX_BYTES = 64 * 1024 * 1024
RETRY_MS = 1000  # how long a client waits before it reconnects


class BoundedEventStore(EventStore):
    def __init__(self, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.bytes = 0
        self._seq = 0
        # seq -> (stream, message or None for a priming event, its size); oldest first
        self._events: OrderedDict[int, tuple[StreamId, JSONRPCMessage | None, int]] = OrderedDict()

    @property
    def count(self) -> int:  # not __len__: the SDK tests the store for truth, and an empty one must pass
        return len(self._events)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self._seq += 1
        size = 64 + (len(message.model_dump_json(by_alias=True, exclude_unset=True)) if message is not None else 0)
        self._events[self._seq] = (stream_id, message, size)
        self.bytes += size
        while self._events and (len(self._events) > self.max_events or self.bytes > self.max_bytes):
            _, (_, _, dropped) = self._events.popitem(last=False)
            self.bytes -= dropped
        return str(self._seq)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        try:
            after = int(last_event_id)
        except ValueError:
            return None
        entry = self._events.get(after)
        if entry is None:  # unknown, or already dropped
            return None
        stream = entry[0]
        for seq, (sid, message, _) in list(self._events.items()):
            if seq > after and sid == stream and message is not None:
                await send_callback(EventMessage(message, str(seq)))
        return stream
