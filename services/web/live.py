"""Live activity as Server-Sent Events (sse-starlette), fed by the tracking service's WatchActivity streams.

A rep's page watches the rep; a sales manager's console watches every rep of the
team (at most MAX_WATCHED, one upstream stream each), merged into one event
stream. Each event is ``{"message", "time", "contact"}`` as JSON; the browser's
EventSource reconnects by itself (``retry``) when the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence

import grpc
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from services.protos.contentops.tracking.v1 import tracking_pb2 as tpb

from .backends import request_id
from .sessions import User

log = logging.getLogger("services.web")

MAX_WATCHED = 20  # reps per stream: each is one WatchActivity stream (a server thread) on the tracking service
RETRY_MS = 5_000
QUEUE = 256


def stream(edge, request: Request, user: User, reps: Sequence[str]) -> EventSourceResponse:  # type: ignore[no-untyped-def]
    return EventSourceResponse(_events(edge, request, user, list(reps)[:MAX_WATCHED]), ping=15,
                               headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def _events(edge, request: Request, user: User, reps: list[str]) -> AsyncIterator[ServerSentEvent]:  # type: ignore[no-untyped-def]
    b = edge.backends
    md = b.metadata(request_id(request), user.token)
    queue: asyncio.Queue[ServerSentEvent | None] = asyncio.Queue(QUEUE)
    calls = [b.tracking.WatchActivity(tpb.WatchActivityRequest(rep=rep), metadata=md) for rep in reps]

    async def pump(call) -> None:  # type: ignore[no-untyped-def]
        try:
            async for a in call:
                event = ServerSentEvent(data=json.dumps({
                    "message": a.message, "time": a.event_time.ToDatetime().isoformat() + "Z", "contact": a.contact,
                    "kind": tpb.ActivityKind.Name(a.kind)}, ensure_ascii=False), event="activity")
                with contextlib.suppress(asyncio.QueueFull):  # a stalled browser misses events, never holds memory
                    queue.put_nowait(event)
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.CANCELLED:
                log.info("activity stream ended: %s [request id %s]", err.code().name, request_id(request))
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(call)) for call in calls]
    try:
        yield ServerSentEvent(event="ready", data=json.dumps({"watching": len(reps)}), retry=RETRY_MS)
        ended = 0
        while ended < len(tasks):
            item = await queue.get()
            if item is None:
                ended += 1  # one upstream stream ended; the others go on
                continue
            yield item
    finally:
        for call in calls:
            call.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
