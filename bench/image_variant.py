"""Image variant: one rep's copy of a 1080x1080 JPEG photo against a plain decode + encode of the same photo.

The photo is real: scikit-image's ``coffee`` (Rachel Michetti, CC0; bundled as
services/demo_data/01-coffee.jpg) scaled up to 1620x1080 and centre-cropped
to 1080x1080, saved at JPEG quality 92 like a phone would. The floor, in the
same run, is ``Image.open(...).load()`` plus ``save(..., "JPEG")`` at the same
quality as the variant it is paired with. The two take turns (alternating
which goes first), each rep with its own plan, and the medians are compared.

Also reported: SSIM against the aligned original (min over 50 reps, with and
without a name + QR badge, outside the badge), byte-distinctness of those 50
copies, and how far the copies' pHash/dHash sit from each other (small by
design: no perturbation aims at perceptual hashes).

``python -m bench.image_variant [--quick]`` prints the rows on their own.
"""

from __future__ import annotations

import gc
import io
import itertools
import statistics
import time

import numpy as np
from PIL import Image

from services.distribution.domain.images import (
    Badge,
    hash_distance,
    plan_edit,
    render_variant,
    ssim_against_original,
)

from .common import ROOT, Score, run_alone

PHOTO = ROOT / "services" / "demo_data" / "01-coffee.jpg"
SIDE = 1080
TARGET_RATIO = 1.5
TARGET_SSIM = 0.95
FIDELITY_REPS = 50


def photo_1080() -> bytes:
    base = Image.open(PHOTO).convert("RGB")
    scale = SIDE / min(base.size)
    big = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.LANCZOS)
    left, top = (big.width - SIDE) // 2, (big.height - SIDE) // 2
    out = io.BytesIO()
    big.crop((left, top, left + SIDE, top + SIDE)).save(out, "JPEG", quality=92)
    return out.getvalue()


def qr_like_png(modules: int = 29, px: int = 5, seed: int = 7) -> bytes:
    """A QR-shaped test card (finder squares, random modules, quiet zone): what a rep's contact QR looks like."""
    rng = np.random.default_rng(seed)
    dark = rng.random((modules, modules)) > 0.5
    for y, x in ((0, 0), (0, modules - 7), (modules - 7, 0)):
        dark[y:y + 7, x:x + 7] = True
        dark[y + 1:y + 6, x + 1:x + 6] = False
        dark[y + 2:y + 5, x + 2:x + 5] = True
    pixels = np.pad(np.where(dark, 0, 255).astype(np.uint8), 4, constant_values=255)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((pixels.shape[1] * px, pixels.shape[0] * px), Image.Resampling.NEAREST).save(out, "PNG")
    return out.getvalue()


def plain_decode_encode(data: bytes, quality: int) -> bytes:
    image = Image.open(io.BytesIO(data))
    image.load()
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def timed_pairs(data: bytes, iterations: int, badge: Badge | None) -> tuple[list[float], list[float]]:
    floor: list[float] = []
    variant: list[float] = []
    reps = (f"bench-rep-{i}" for i in itertools.count())
    for i in range(iterations + 5):  # the first five warm caches and are dropped
        edit = plan_edit("bench-photo", next(reps))
        pair = {}
        for side in (("floor", "variant") if i % 2 else ("variant", "floor")):
            started = time.perf_counter()
            if side == "floor":
                plain_decode_encode(data, edit.jpeg_quality)
            else:
                render_variant(data, edit, badge)
            pair[side] = time.perf_counter() - started
        if i >= 5:
            floor.append(pair["floor"])
            variant.append(pair["variant"])
    return floor, variant


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def run(quick: bool) -> list[dict[str, str]]:
    data = photo_1080()
    iterations = 40 if quick else 300
    qr = qr_like_png()
    badge = Badge("王小明 · 上海徐汇店", qr, 1)
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of one side of a pair would only add noise
    try:
        floor, plain = timed_pairs(data, iterations, None)
        floor_b, badged = timed_pairs(data, max(10, iterations // 3), badge)
    finally:
        if gc_was_enabled:
            gc.enable()
    base, med = statistics.median(floor), statistics.median(plain)
    base_b, med_b = statistics.median(floor_b), statistics.median(badged)
    ratio = med / base
    rows = [
        {"figure": f"Image variant, {SIDE}x{SIDE} JPEG photo: decode, crop, tone table, encode, sha256 + pHash + dHash "
                   f"(median of {len(plain)})",
         "measured": ms(med), "target": f"≤ {TARGET_RATIO}× plain decode + encode",
         "baseline": f"plain decode + encode: {ms(base)}",
         "ratio": f"{ratio:.2f}× ({'meets' if ratio <= TARGET_RATIO else 'misses'} target)",
         "score": Score("image variant render, 1080² JPEG", med * 1000, TARGET_RATIO * base * 1000, "ms", floor=base * 1000)},
        {"figure": f"↳ same with a badge (Chinese name + QR) (median of {len(badged)})",
         "measured": ms(med_b), "target": "—", "baseline": f"plain decode + encode: {ms(base_b)}",
         "ratio": f"{med_b / base_b:.2f}×"},
    ]

    ssim_plain: list[float] = []
    ssim_badge: list[float] = []
    shas: set[str] = set()
    phashes: list[str] = []
    dhashes: list[str] = []
    for i in range(FIDELITY_REPS):
        edit = plan_edit("bench-photo", f"fidelity-rep-{i}")
        variant = render_variant(data, edit)
        with_badge = render_variant(data, edit, Badge(f"Rep {i:02d} 王小明", qr, 1 + i % 4))
        ssim_plain.append(ssim_against_original(data, variant))
        ssim_badge.append(ssim_against_original(data, with_badge))
        shas.update((variant.sha256, with_badge.sha256))
        phashes.append(variant.phash)
        dhashes.append(variant.dhash)
    pairs = list(itertools.combinations(range(FIDELITY_REPS), 2))
    p_dist = [hash_distance(phashes[a], phashes[b]) for a, b in pairs]
    d_dist = [hash_distance(dhashes[a], dhashes[b]) for a, b in pairs]
    for label, values in (("no badge", ssim_plain), ("with badge, outside it", ssim_badge)):
        low = min(values)
        rows.append({"figure": f"SSIM vs aligned original, {label}: min over {FIDELITY_REPS} reps",
                     "measured": f"{low:.4f}", "target": f"≥ {TARGET_SSIM}",
                     "baseline": f"median {statistics.median(values):.4f}",
                     "ratio": "meets target" if low >= TARGET_SSIM else "misses target",
                     "score": Score(f"SSIM min, {label.split(',')[0]}", low, TARGET_SSIM, "", higher_is_better=True)})
    rows.append({"figure": f"Byte-distinct copies among {2 * FIDELITY_REPS} (50 reps, with and without badge)",
                 "measured": f"{len(shas)}", "target": f"{2 * FIDELITY_REPS}", "baseline": "—",
                 "ratio": "meets target" if len(shas) == 2 * FIDELITY_REPS else "misses target"})
    rows.append({"figure": "pHash / dHash distance between two reps' copies (bits of 64; min / median / max)",
                 "measured": f"{min(p_dist)} / {statistics.median(p_dist):g} / {max(p_dist)} · "
                             f"{min(d_dist)} / {statistics.median(d_dist):g} / {max(d_dist)}",
                 "target": "— (small by design)", "baseline": "—", "ratio": "—"})
    return rows


if __name__ == "__main__":
    run_alone(__doc__, run)
