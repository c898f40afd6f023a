"""Live activity as Server-Sent Events (sse-starlette), fed by the tracking service's WatchActivity streams.

A rep's page watches the rep; a sales manager's console watches every rep of the
team (at most MAX_WATCHED, one upstream stream each), merged into one event
stream. Each event is ``{"message", "time", "contact"}`` as JSON. An upstream
stream that ends in passing (an aged connection, a draining server) is watched
again at once; the browser's EventSource reconnects by itself (``retry``) only
when the whole stream ends.
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
# s: an upstream stream that ended sooner is watched again after a back-off (a down service fails at once; a stream
# closed for its connection's age ran at least the server's grace, SHUTDOWN_GRACE_SECONDS, 15 s by default).
RESUME_BACKOFF_AFTER = 1.0


def stream(edge, request: Request, user: User, reps: Sequence[str]) -> EventSourceResponse:  # type: ignore[no-untyped-def]
    return EventSourceResponse(_events(edge, request, user, list(reps)[:MAX_WATCHED]), ping=15,
                               headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def _events(edge, request: Request, user: User, reps: list[str]) -> AsyncIterator[ServerSentEvent]:  # type: ignore[no-untyped-def]
    b = edge.backends
    md = b.metadata(request_id(request), user.token)
    queue: asyncio.Queue[ServerSentEvent | None] = asyncio.Queue(QUEUE)

    async def pump(rep: str) -> None:
        """One rep's upstream stream, watched again when it ends for a reason that passes: servers close aged
        connections (GRPC_MAX_CONNECTION_AGE_SECONDS: every stream on one gets UNAVAILABLE) and draining servers end
        their streams, and the browser should not see either. A refusal (scope, token) ends it for good."""
        loop, delay = asyncio.get_running_loop(), 0.0
        while True:
            call = b.tracking.WatchActivity(tpb.WatchActivityRequest(rep=rep), metadata=md)
            began = loop.time()
            try:
                async for a in call:
                    event = ServerSentEvent(data=json.dumps({
                        "message": a.message, "time": a.event_time.ToDatetime().isoformat() + "Z", "contact": a.contact,
                        "kind": tpb.ActivityKind.Name(a.kind)}, ensure_ascii=False), event="activity")
                    with contextlib.suppress(asyncio.QueueFull):  # a stalled browser misses events, never holds memory
                        queue.put_nowait(event)
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    log.info("activity stream ended: %s [request id %s]", err.code().name, request_id(request))
                    await queue.put(None)
                    return
            finally:
                call.cancel()  # this task cancelled (the browser left): the upstream call too
            # At once after a stream that ran; backing off while every attempt fails (the service is down).
            delay = 0.0 if loop.time() - began > RESUME_BACKOFF_AFTER else min(RETRY_MS / 1000, max(0.1, delay * 2))
            await asyncio.sleep(delay)

    tasks = [asyncio.create_task(pump(rep)) for rep in reps]
    try:
        yield ServerSentEvent(event="ready", data=json.dumps({"watching": len(reps)}), retry=RETRY_MS)
        ended = 0
        while ended < len(tasks):
            item = await queue.get()
            if item is None:
                ended += 1  # one upstream stream refused; the others go on
                continue
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
