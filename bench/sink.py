"""``python -m bench.sink ADDR``: a gRPC server that swallows a client stream (transport floor).

One client-streaming method, ``/bench.Sink/Swallow``, takes raw request bytes
(no protobuf parsing), counts them and answers with the count. Same grpcio,
same message-size limit and a thread pool like the content server's, in its
own process like it: an upload to it costs what moving the bytes over gRPC
costs, and nothing else.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc

METHOD = "/bench.Sink/Swallow"


def swallow(requests: Iterator[bytes], _context: grpc.ServicerContext) -> bytes:
    return str(sum(len(r) for r in requests)).encode()


def main(address: str) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)])
    handler = grpc.stream_unary_rpc_method_handler(swallow)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Sink", {"Swallow": handler})])
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"could not bind {address}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0).wait()


if __name__ == "__main__":
    main(sys.argv[1])
