"""Glue between published snapshots and the pure variation domain.

The domain (``domain/text.py``, ``domain/images.py``) knows nothing of protobuf
or storage; this module turns a ``PostContentSnapshot`` and a stored rep into
its inputs, and its outputs into what the service stores and reports.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from services.protos.contentops.content.v1 import events_pb2

from .domain import text as textv
from .domain.image_decode import ImageRenderError
from .domain.images import Badge, ImageEdit, Variant, hash_distance, plan_edit, render_variant, ssim_against_original
from .domain.reps import Rep

TEXT_SAMPLE = 2000

# Failures that no retry can fix: the copy is marked failed with this reason.
PermanentRenderError = (textv.TextRenderError, ImageRenderError)


def text_source(snapshot: events_pb2.PostContentSnapshot) -> textv.TextSource:
    return textv.TextSource(title=snapshot.title, body=snapshot.body,
                            protected_phrases=tuple(snapshot.protected_phrases), rep_template=snapshot.rep_template)


def rep_fields(rep: Rep) -> textv.RepFields:
    return textv.RepFields(id=rep.id, display_name=rep.display_name, signature=rep.signature, store=rep.store,
                           region=rep.region, team=rep.team_id or "")


def plan(source: textv.TextSource, rep_ids: Sequence[str], seed: str) -> textv.Plan:
    return textv.plan_assignments(source, rep_ids, seed=seed)


def extend(source: textv.TextSource, existing: dict[str, dict[str, Any]], rep_id: str, seed: str) -> textv.VariantChoice:
    choices = {r: textv.VariantChoice.from_json(c) for r, c in existing.items()}
    base = textv.Plan(choices=choices, capacity_estimate=0, policy_met=True, order=tuple(sorted(choices)), seed=seed)
    return textv.extend_plan(source, base, [rep_id]).choices[rep_id]


def choice_json(choice: textv.VariantChoice) -> dict[str, object]:
    return choice.to_json()


def render_copy_text(snapshot: events_pb2.PostContentSnapshot, rep: Rep, choice: dict[str, Any]) -> str:
    return textv.render_text(text_source(snapshot), rep_fields(rep), textv.VariantChoice.from_json(choice),
                             post_title=snapshot.title)


def render_image(original: bytes, sha256: str, rep: Rep, snapshot: events_pb2.PostContentSnapshot,
                 index: int, attempt: int = 0, qr_png: bytes | None = None) -> Variant:
    """One image of a rep's copy; ``qr_png`` is the rep's contact QR, drawn on the badge when the post has one."""
    badge = (Badge(text=rep.display_name, qr_png=qr_png, position=snapshot.badge_position or 1)
             if snapshot.badge_enabled else None)
    try:
        return render_variant(original, plan_edit(sha256, rep.id, attempt), badge)
    except ImageRenderError as err:
        raise ImageRenderError(f"image {index + 1}: {err}") from None


def edit_json(edit: ImageEdit) -> dict[str, object]:
    return asdict(edit)


def variant_from_record(record: dict[str, Any], data: bytes) -> Variant:
    edit = record["edit"]
    return Variant(data=data, sha256=record["sha256"], phash=record["phash"], dhash=record["dhash"],
                   width=record["width"], height=record["height"], mime_type=record["mime_type"],
                   edit=ImageEdit(**{**edit, "crop": tuple(edit["crop"])}),
                   badge_box=tuple(record["badge_box"]) if record.get("badge_box") else None,  # type: ignore[arg-type]
                   source_box=tuple(record["source_box"]))  # type: ignore[arg-type]


def image_record(key: str, source_key: str, variant: Variant) -> dict[str, object]:
    return {"key": key, "source": source_key, "sha256": variant.sha256, "phash": variant.phash,
            "dhash": variant.dhash, "width": variant.width, "height": variant.height, "mime_type": variant.mime_type,
            "edit": edit_json(variant.edit), "badge_box": list(variant.badge_box) if variant.badge_box else None,
            "source_box": list(variant.source_box)}


@dataclass(frozen=True)
class Report:
    revision: int
    copies: int
    text_duplicates: int
    jaccard_min: float
    jaccard_median: float
    jaccard_max: float
    image_byte_duplicates: int
    phash_distances: list[int]  # histogram: [d] = pairs of same-position images at Hamming distance d
    dhash_distances: list[int]
    ssim_min: float
    protected_span_violations: int


def _histogram(values: list[int]) -> list[int]:
    if not values:
        return []
    counts = Counter(values)
    return [counts.get(d, 0) for d in range(max(counts) + 1)]


def report(snapshot: events_pb2.PostContentSnapshot, texts: list[str], images: list[list[dict[str, Any]]],
           sample: list[list[dict[str, Any]]], fidelity: list[list[dict[str, Any]]],
           read_blob: Callable[[str], bytes], revision: int, copies: int) -> Report:
    source = text_source(snapshot)
    # Pairwise similarity costs O(n^2) memory and time: exact up to TEXT_SAMPLE copies, sampled beyond.
    # Duplicates are counted over every copy.
    sampled = texts if len(texts) <= TEXT_SAMPLE else random.Random(revision).sample(texts, TEXT_SAMPLE)
    stats = textv.text_report(sampled) if len(sampled) >= 2 else None
    duplicates = len(texts) - len({textv.normalise(t) for t in texts})
    violations = 0
    for text in texts:
        try:
            textv.check_protected(source, text)
        except textv.TextRenderError:
            violations += 1
    shas = Counter(im["sha256"] for per_copy in images for im in per_copy)
    byte_dups = sum(n - 1 for n in shas.values() if n > 1)
    phash, dhash = [], []
    positions = max((len(c) for c in sample), default=0)
    for pos in range(positions):
        column = [c[pos] for c in sample if len(c) > pos]
        for i in range(len(column)):
            for j in range(i + 1, len(column)):
                phash.append(hash_distance(column[i]["phash"], column[j]["phash"]))
                dhash.append(hash_distance(column[i]["dhash"], column[j]["dhash"]))
    ssims = []
    originals: dict[str, bytes] = {}
    for per_copy in fidelity:
        for record in per_copy:
            original = originals.setdefault(record["source"], read_blob(record["source"]))
            ssims.append(ssim_against_original(original, variant_from_record(record, read_blob(record["key"]))))
    return Report(
        revision=revision, copies=copies,
        text_duplicates=duplicates,
        jaccard_min=stats.jaccard_min if stats else 0.0,
        jaccard_median=stats.jaccard_median if stats else 0.0,
        jaccard_max=stats.jaccard_max if stats else 0.0,
        image_byte_duplicates=byte_dups,
        phash_distances=_histogram(phash), dhash_distances=_histogram(dhash),
        ssim_min=min(ssims) if ssims else 0.0,
        protected_span_violations=violations,
    )


@dataclass(frozen=True)
class Preview:
    texts: list[str]
    capacity_estimate: int
    targeted: int
    policy_met: bool
    warning: str


def preview(snapshot: events_pb2.PostContentSnapshot, reps: list[Rep], targeted: int, seed: str) -> Preview:
    """Sample reps' texts from a plan over ``targeted`` reps (the samples first), nothing stored."""
    source = text_source(snapshot)
    ids = [r.id for r in reps]
    fillers = [f"~preview-{i}" for i in range(max(0, targeted - len(ids)))]
    planned = plan(source, ids + fillers, seed)
    texts = [textv.render_text(source, rep_fields(r), planned.choices[r.id], post_title=snapshot.title) for r in reps]
    return Preview(texts, planned.capacity_estimate, targeted, planned.policy_met,
                   capacity_warning(planned.capacity_estimate, targeted))


def capacity_warning(capacity: int, targeted: int) -> str:
    """What the editor is told when the post's variation space is too small for its reps ("" when it is not)."""
    if targeted <= capacity:
        return ""
    return (f"the variation space serves about {capacity} reps within the policy but the post targets {targeted}: "
            "add [[alternatives]] or fewer protected phrases, or copies will be near-duplicates")


__all__ = ["ImageRenderError", "PermanentRenderError", "Report"]
