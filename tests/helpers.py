"""Small builders shared by the API tests."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator

from PIL import Image

from services.protos.contentops.content.v1 import content_pb2 as pb


def jpeg(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    img.putpixel((seed % size[0], 0), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def upload_messages(data: bytes, filename: str = "photo.jpg", request_id: str = "",
                    chunk: int = 16 * 1024) -> Iterator[pb.UploadAssetRequest]:
    yield pb.UploadAssetRequest(metadata=pb.AssetMetadata(filename=filename, request_id=request_id))
    for i in range(0, len(data), chunk):
        yield pb.UploadAssetRequest(chunk=data[i : i + chunk])


def post_content(title: str = "开放日", images: list[str] | None = None, topics: list[str] | None = None,
                 body: str = "[[亲爱的家长们|各位爸爸妈妈]]，本周六早教中心开放日！电话 400-820-1234。") -> pb.PostContent:
    return pb.PostContent(
        title=title,
        body=body,
        images=images or [],
        topics=topics or [],
        variation=pb.VariationSettings(protected_phrases=["早教中心开放日"],
                                       rep_template="{{ body }}\n—— {{ rep.display_name }}"),
    )


def new_request_id() -> str:
    return str(uuid.uuid4())


def wait_for(condition: Callable[[], bool], what: str, wait_s: float = 60.0) -> None:
    """Poll until ``condition()``; an AssertionError naming ``what`` after ``wait_s`` (a bound for a loaded machine,
    never a speed assertion)."""
    deadline = time.monotonic() + wait_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {wait_s} s: {what}")
        time.sleep(0.02)
