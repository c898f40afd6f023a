"""UploadAsset throughput against a plain blob-store put of the same bytes.

The image is a real photo (the bundled demo coffee shot) scaled up to ~5 MB
of JPEG with sensor-like noise, so it compresses like a phone photo, not like
a flat test pattern. Every upload gets distinct bytes (a JPEG comment segment
carrying the iteration number) so the service's sha256 dedupe never
short-cuts it. The floor is the blob store's own ``put`` of the same bytes,
called directly in this process: what storing costs with no gRPC, no
hashing, no header parsing and no database.
"""

from __future__ import annotations

import io
import math
import statistics
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from services.protos.contentops.content.v1 import content_pb2 as pb
from services.protos.contentops.content.v1 import content_pb2_grpc as pb_grpc
from services.shared.blobstore import BlobStore

from .common import ROOT
from .sink import METHOD as SINK_METHOD

PHOTO = ROOT / "services" / "demo_data" / "01-coffee.jpg"
TARGET_BYTES = 5 * 1000 * 1000
MiB = 1024 * 1024


def noisy_photo(target_bytes: int = TARGET_BYTES, seed: int = 1) -> bytes:
    """A JPEG of about ``target_bytes``: the demo photo upscaled, with Gaussian noise, quality 95."""
    base = Image.open(PHOTO).convert("RGB")
    rng = np.random.default_rng(seed)
    width = 3600
    data = b""
    for _ in range(5):
        height = width * base.height // base.width
        pixels = np.asarray(base.resize((width, height), Image.Resampling.LANCZOS), dtype=np.int16)
        noisy = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(noisy).save(out, "JPEG", quality=95)
        data = out.getvalue()
        if abs(len(data) - target_bytes) < 0.04 * target_bytes:
            break
        width = int(width * math.sqrt(target_bytes / len(data)))
    return data


def distinct(jpeg: bytes, n: int) -> bytes:
    """The same image with a COM segment after SOI: new bytes, new sha256, same pixels."""
    assert jpeg[:2] == b"\xff\xd8"
    payload = f"contentops bench upload {n} {uuid.uuid4()}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@dataclass
class Throughput:
    seconds: list[float]
    size: int

    @property
    def mb_per_s(self) -> float:
        return self.size / 1e6 / statistics.median(self.seconds)


def _messages(data: bytes, n: int, chunk: int) -> Iterator[pb.UploadAssetRequest]:
    yield pb.UploadAssetRequest(metadata=pb.AssetMetadata(filename=f"bench-{n}.jpg", request_id=str(uuid.uuid4())))
    view = memoryview(data)
    for i in range(0, len(data), chunk):
        yield pb.UploadAssetRequest(chunk=bytes(view[i : i + chunk]))


@dataclass
class Comparison:
    upload: Throughput  # UploadAsset to the content server
    put: Throughput  # the blob store's put, called directly
    transport: Throughput  # the same gRPC messages to a server that only counts them


def compare(address: str, metadata: tuple[tuple[str, str], ...], sink: str, store: BlobStore, photo: bytes,
            count: int, chunk: int) -> Comparison:
    """``count`` rounds of: one UploadAsset, one plain put, one stream to the sink (order rotating),
    each with bytes never sent before, so a busy moment on a shared machine hits all three alike."""
    with grpc.insecure_channel(address) as channel, grpc.insecure_channel(sink) as sink_channel:
        stub = pb_grpc.ContentServiceStub(channel)
        swallow = sink_channel.stream_unary(SINK_METHOD, request_serializer=pb.UploadAssetRequest.SerializeToString)
        serial = iter(range(10**9))

        def upload() -> None:
            data = distinct(photo, next(serial))
            asset = stub.UploadAsset(_messages(data, 0, chunk), metadata=metadata, timeout=120)
            if asset.size_bytes != len(data):
                raise AssertionError(f"stored {asset.size_bytes} bytes of {len(data)}")

        def put() -> None:
            data = distinct(photo, next(serial))
            store.put(f"bench/{uuid.uuid4().hex}", io.BytesIO(data), len(data), "image/jpeg")

        def stream() -> None:
            data = distinct(photo, next(serial))
            received = int(swallow(_messages(data, 0, chunk), timeout=120))
            if received < len(data):
                raise AssertionError(f"sink received {received} bytes of {len(data)}")

        steps = [upload, put, stream]
        for step in steps:  # warm-up: connections, server threads, database pool, bucket check
            step()
        times: dict[object, list[float]] = {step: [] for step in steps}
        for n in range(count):
            for step in steps[n % 3:] + steps[: n % 3]:
                start = time.perf_counter()
                step()
                times[step].append(time.perf_counter() - start)
    return Comparison(*(Throughput(times[step], len(photo)) for step in steps))
