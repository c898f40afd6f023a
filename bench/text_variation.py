"""Text variation (services/distribution/domain/text.py): copy rendering latency and planning time.

``run(quick)`` returns rows ``{figure, measured, target, baseline, ratio}``; every baseline is measured
in the same run. Nothing here asserts on timings.

- render_text for a 500-character post, warm (the post's variation space parsed and its template
  compiled, as for every copy after a campaign's first), p50 and p99 over all reps of a campaign;
  baseline: the template render alone (jinja2 sandbox, same template, same body), the floor any
  personalised copy pays;
- the first copy of a post (cold: parse the body, compile the template);
- plan_assignments for 1,000 reps; baseline: 1,000 independent random draws from the same space
  (what the planner replaces), with the max pairwise Jaccard each reaches;
- text_report over the 1,000 copies (all 499,500 pairs).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from services.content.domain import templates
from services.distribution.domain import text as tv
from services.distribution.domain.text import RepFields, TextSource

from .common import Score

TEMPLATE = "{{ body }}\n\n—— {{ rep.display_name }}｜{{ rep.store }}\n{{ rep.signature }}"
# 500 characters: a typical WeChat Moments / Xiaohongshu sales post with editor alternatives, pool phrases,
# prices, dates, times, phone numbers, a link, #hashtags and an @mention.
POST_500 = """[[亲爱的朋友们|各位朋友|大家好]]，双十一[[福利|好礼]]来啦！「暖冬羽绒服」系列限时优惠，全场低至5折，会员再享额外95折。

这次的款式[[真的|确实|]]很适合通勤和周末出游：轻薄保暖，可机洗，颜色有燕麦、雾蓝、墨黑三种，建议到店试穿。每天前100名下单的朋友，报名送定制围巾一条，名额有限，先到先得。

[[我自己|我]]穿了一个冬天，最喜欢它的立领和加长的袖口，骑车也不灌风。面料做了防泼水处理，小雨天不用担心。尺码偏大半码，拿不准的话私信我，帮你对照身高体重选。

活动时间：2026-11-01 10:00 至 2026年11月11日 23:59
门店地址：上海市静安区南京西路1266号（地铁2号线出口旁）
咨询热线：400-820-1234 或 138 0013 8000
线上购买：https://shop.example.com/winter?from=rep

[[不要错过|千万别错过]]这次机会[[！|~]]欢迎咨询，也欢迎转发给有需要的朋友。售价 ¥599 起，满¥999再减¥100。\
温馨提示：活动商品不退换，数量有限，售完即止。

#双十一 #羽绒服 @暖冬官方
"""
SOURCE_500 = TextSource("双十一暖冬羽绒服", POST_500, ("「暖冬羽绒服」",), TEMPLATE)
DEMO_SOURCE = TextSource(
    "开放日", (Path(__file__).resolve().parents[1] / "services" / "demo_data" / "post.txt").read_text(encoding="utf-8"),
    ("「小小探索家」早教中心", "¥99/节", "400-820-1234"), TEMPLATE)
TARGET_P50_MS = 1.0


def _percentile(sorted_values: list[float], q: float) -> float:
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _reps(count: int) -> list[RepFields]:
    stores = ("静安店", "徐汇店", "浦东店", "朝阳店", "天河店")
    return [RepFields(f"rep{i}", f"销售{i:04d}", signature="有问题随时找我", store=stores[i % len(stores)], region="华东")
            for i in range(count)]


def _clear_caches() -> None:
    tv._space.cache_clear()
    tv._normalised_space.cache_clear()
    templates._compiled.cache_clear()


def run(quick: bool) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    reps_count = 1000
    reps = _reps(reps_count)
    ids = [r.id for r in reps]

    # Planning first (its own figure), then render every rep's copy with the plan.
    plan_runs = 1 if quick else 3
    plan_times, random_times = [], []
    plan = None
    for i in range(plan_runs):
        _clear_caches()
        started = time.perf_counter()
        plan = tv.plan_assignments(SOURCE_500, ids, seed=f"revisions/{i}")
        plan_times.append(time.perf_counter() - started)
        space = tv.variation_space(SOURCE_500)
        rnd = random.Random(i)
        started = time.perf_counter()
        drawn = [space.choice([rnd.randrange(len(s.options)) for s in space.slots], rnd.randrange(space.break_styles))
                 for _ in ids]
        random_bodies = [space.render_body(c) for c in drawn]
        random_times.append(time.perf_counter() - started)
    assert plan is not None
    plan_s, random_s = sorted(plan_times)[len(plan_times) // 2], sorted(random_times)[len(random_times) // 2]
    rows.append({"figure": f"plan_assignments, {reps_count:,} reps, 500-char post (space of {space.size:.1e} copies)",
                 "measured": f"{plan_s * 1000:.0f} ms", "target": "well under a few seconds",
                 "baseline": f"{reps_count:,} independent random draws + bodies: {random_s * 1000:.0f} ms",
                 "ratio": f"{plan_s / random_s:.0f}×"})

    bodies = [tv.render_body(SOURCE_500, plan.choices[i]) for i in ids]
    started = time.perf_counter()
    planned = tv.text_report(bodies)
    report_s = time.perf_counter() - started
    randomly = tv.text_report(random_bodies)
    rows.append({"figure": f"max pairwise body Jaccard (5-gram), {reps_count:,} reps: planned vs random draws",
                 "measured": f"{planned.jaccard_max:.3f} (median {planned.jaccard_median:.3f}, {planned.duplicates} duplicates)",
                 "target": "≤ 0.8, no duplicates",
                 "baseline": f"random: {randomly.jaccard_max:.3f} (median {randomly.jaccard_median:.3f}, "
                             f"{randomly.duplicates} duplicates)",
                 "ratio": f"{planned.jaccard_max / randomly.jaccard_max:.2f}",
                 "score": Score(f"max body Jaccard, {reps_count:,} reps", planned.jaccard_max, 0.8, "")})
    demo_plan = tv.plan_assignments(DEMO_SOURCE, [f"rep{i}" for i in range(100)], seed="demo")
    rows.append({"figure": "capacity estimate (body Jaccard ≤ 0.8): demo post / 500-char post",
                 "measured": f"{demo_plan.capacity_estimate}{'' if demo_plan.capacity_exact else '+'} / "
                             f"{plan.capacity_estimate}{'' if plan.capacity_exact else '+'}",
                 "target": "—", "baseline": "—", "ratio": "—"})
    rows.append({"figure": f"text_report, {reps_count:,} copies ({planned.pairs:,} pairs)",
                 "measured": f"{report_s * 1000:.0f} ms", "target": "—", "baseline": "—", "ratio": "—"})

    # render_text, warm: every rep's copy, several passes; the floor renders the same template and body.
    passes = 2 if quick else 10
    context_body = tv.variation_space(SOURCE_500).canonical
    copy_lat, floor_lat = [], []
    for _ in range(passes):
        for rep in reps:
            choice = plan.choices[rep.id]
            started = time.perf_counter()
            tv.render_text(SOURCE_500, rep, choice)
            copy_lat.append(time.perf_counter() - started)
            started = time.perf_counter()
            templates.render_template(TEMPLATE, {"rep": rep.context(), "post": {"title": SOURCE_500.title},
                                                 "body": context_body})
            floor_lat.append(time.perf_counter() - started)
    copy_lat.sort()
    floor_lat.sort()
    for q in (50, 99):
        value, base = _percentile(copy_lat, q), _percentile(floor_lat, q)
        rows.append({"figure": f"render_text p{q}, 500-char post ({len(POST_500)} chars), warm",
                     "measured": f"{value * 1000:.3f} ms",
                     "target": f"≤ {TARGET_P50_MS:g} ms" if q == 50 else "—",
                     "baseline": f"template render alone p{q}: {base * 1000:.3f} ms",
                     "ratio": f"{value / base:.1f}×",
                     **({"score": Score("render_text p50, 500 chars", value * 1000, TARGET_P50_MS, "ms", floor=base * 1000)}
                        if q == 50 else {})})

    # Cold: the first copy of a post (parse the body, compile the template).
    cold = []
    for i in range(5 if quick else 30):
        _clear_caches()
        started = time.perf_counter()
        tv.render_text(SOURCE_500, reps[i], plan.choices[reps[i].id])
        cold.append(time.perf_counter() - started)
    cold.sort()
    rows.append({"figure": "render_text, first copy of a post (parse body + compile template), median",
                 "measured": f"{_percentile(cold, 50) * 1000:.2f} ms", "target": "—",
                 "baseline": f"warm p50: {_percentile(copy_lat, 50) * 1000:.3f} ms",
                 "ratio": f"{_percentile(cold, 50) / _percentile(copy_lat, 50):.0f}×"})
    return rows


if __name__ == "__main__":
    from .common import run_alone

    run_alone(__doc__, run)
