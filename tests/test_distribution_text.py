"""Text variation for the distribution service, tested directly (pure domain code, no services)."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.content.domain import templates
from services.content.domain.alternatives import Literal, parse_body
from services.distribution.domain import phrases_en, phrases_zh
from services.distribution.domain.text import (
    EMOJI,
    PUNCTUATION,
    Policy,
    RepFields,
    TextRenderError,
    TextSource,
    VariantChoice,
    check_protected,
    extend_plan,
    jaccard,
    normalise,
    plan_assignments,
    protected_spans,
    render_body,
    render_text,
    text_report,
    variation_space,
)
from services.shared.errors import FailedPrecondition

ROOT = Path(__file__).resolve().parents[1]
DEMO_BODY = (ROOT / "services" / "demo_data" / "post.txt").read_text(encoding="utf-8")
DEMO_PHRASES = ("「小小探索家」早教中心", "¥99/节", "400-820-1234")
DEMO_TEMPLATE = "{{ body }}\n\n—— {{ rep.display_name }}｜{{ rep.store }}\n{{ rep.signature }}"  # as services/demo.py
DEMO = TextSource("「小小探索家」开放日", DEMO_BODY, DEMO_PHRASES, DEMO_TEMPLATE)

# Every kind of protected content, next to pool phrases and sentence ends that do vary.
RICH_BODY = (
    "[[亲爱的朋友们|各位朋友|大家好]]，「小小探索家」早教中心开放日来啦！限时优惠：体验课 ¥99/节，线上课 $19.99。\n"
    "时间：2026-12-01 上午10:00，也就是12月1日，名额有限，先到先得！\n"
    "报名电话：400-820-1234，或者手机 138 0013 8000。\n"
    "详情：https://example.com/open-day?from=rep 欢迎咨询@某人，记得带上#话题 #早教\n\n"
    "[[不要错过|千万别错过]]这次机会！Contact us today. Don't miss out!\n"
)
RICH_PHRASES = ("「小小探索家」早教中心",)
RICH = TextSource("开放日", RICH_BODY, RICH_PHRASES, "{{ rep.display_name }}：\n{{ body }}\n{{ rep.signature }}")
# Written out by hand, not taken from protected_spans(): what must come through byte for byte.
RICH_PROTECTED = ("「小小探索家」早教中心", "¥99/节", "$19.99", "2026-12-01", "10:00", "12月1日", "400-820-1234",
                  "138 0013 8000", "https://example.com/open-day?from=rep", "@某人", "#话题", "#早教")

INVISIBLE_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Cn", "Mn", "Me", "Zl", "Zp"}


def reps(count: int, prefix: str = "rep") -> list[RepFields]:
    stores = ("静安店", "徐汇店", "浦东店", "朝阳店")
    return [RepFields(f"{prefix}{i}", f"销售{i:03d}", signature="有问题随时找我", store=stores[i % len(stores)],
                      region="华东", team="一组") for i in range(count)]


def literal_texts(body: str) -> list[str]:
    return [s.text for s in parse_body(body) if isinstance(s, Literal)]


def allowed_chars(source: TextSource, rep: RepFields) -> set[str]:
    """What a copy may contain: the source, the template, the rep's fields, the pools, the punctuation set,
    the emoji set, spaces and line breaks. Built here from the pieces, not from the module's own list."""
    pool = "".join(itertools.chain.from_iterable(phrases_zh.GROUPS + phrases_en.GROUPS))
    return (set(source.body) | set(source.rep_template) | set(source.title) | set("".join(rep.__dict__.values()))
            | set(pool) | set(pool.upper()) | set("’") | set(PUNCTUATION) | set("".join(EMOJI)) | {" ", "\n"})


def assert_clean(text: str, allowed: set[str]) -> None:
    assert set(text) <= allowed, f"unexpected characters {sorted(set(text) - allowed)!r}"
    bad = [c for c in text if c != "\n" and unicodedata.category(c) in INVISIBLE_CATEGORIES]
    assert not bad, f"invisible or combining characters {bad!r}"


# ---- the domain stays pure ------------------------------------------------------------------


def test_text_domain_imports_no_infrastructure() -> None:
    code = ("import sys, services.distribution.domain.text;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'grpc', 'sqlalchemy', 'celery', 'redis', 'minio', 'psycopg', 'boto3', 'kombu'});"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- curated pools ------------------------------------------------------------------------


def test_pools_are_curated_groups_of_interchangeable_phrases() -> None:
    groups = phrases_zh.GROUPS + phrases_en.GROUPS
    assert 40 <= len(groups) <= 80
    members = [m for g in groups for m in g]
    assert len(members) == len(set(members)), "a phrase is listed in two groups (or twice)"
    for group in groups:
        assert len(group) >= 2 and len(set(group)) == len(group)
        for member in group:
            assert not re.search(r"\d", member) and protected_spans(member) == [], member  # never protected content
            assert member == member.strip() and "\n" not in member and "[" not in member and "|" not in member
            assert all(c.isascii() or "\u4e00" <= c <= "\u9fff" or c in "，：’" for c in member), member
    for group in phrases_zh.GROUPS:
        assert all(len(m) >= 2 for m in group), group
    for group in phrases_en.GROUPS:
        assert all(m == m.lower() for m in group), group


def test_emoji_and_punctuation_sets_are_visible_single_characters() -> None:
    for emoji in EMOJI:
        assert len(emoji) == 1 and unicodedata.category(emoji) == "So", emoji
    for mark in PUNCTUATION:
        assert unicodedata.category(mark) in {"Po", "Sm"}, mark


# ---- protected spans ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("体验课 ¥99/节，快来", ["¥99/节"]),
    ("online $19.99 only", ["$19.99"]),
    ("详情：https://example.com/open-day?from=rep。", ["https://example.com/open-day?from=rep"]),
    ("see www.example.cn/x, thanks", ["www.example.cn/x"]),
    ("热线 400-820-1234！", ["400-820-1234"]),
    ("手机 138 0013 8000。", ["138 0013 8000"]),
    ("call +86 138 0013 8000 now", ["+86 138 0013 8000"]),
    ("日期 2026-12-01 开始", ["2026-12-01"]),
    ("12月1日见", ["12月1日"]),
    ("2026年11月11日 23:59 截止", ["2026年11月11日", "23:59"]),
    ("上午10:00开始", ["上午10:00"]),
    ("starts 10am sharp", ["10am"]),
    ("参与#话题 #早教 讨论", ["#话题", "#早教"]),
    ("谢谢@某人，也谢谢 @Anna_Lee", ["@某人", "@Anna_Lee"]),
    ("mail info@example.com today", ["info@example.com"]),
    ("全场8.8折，满减50%", ["8.8折", "50%"]),
    ("前20名送一套", ["20", "一套"]),
])
def test_protected_spans_are_found(text: str, expected: list[str]) -> None:
    assert protected_spans(text) == expected


def test_editor_phrases_are_protected_spans() -> None:
    spans = protected_spans("欢迎来到「小小探索家」早教中心！", ["「小小探索家」早教中心", "不在正文里"])
    assert spans == ["「小小探索家」早教中心"]


def test_check_protected_catches_a_changed_price_or_a_dropped_hashtag() -> None:
    canonical = variation_space(RICH).canonical
    check_protected(RICH, canonical)
    for broken in (canonical.replace("¥99/节", "¥98/节"), canonical.replace("#话题", "话题"),
                   canonical.replace("138 0013 8000", "13800138000")):
        with pytest.raises(TextRenderError) as err:
            check_protected(RICH, broken)
        assert err.value.reason == "protected_span"


def test_protected_spans_survive_200_copies_byte_for_byte() -> None:
    ids = [f"rep{i}" for i in range(200)]
    plan = plan_assignments(RICH, ids, seed="revisions/7")
    source_counts = {span: sum(t.count(span) for t in literal_texts(RICH_BODY)) for span in RICH_PROTECTED}
    assert all(source_counts.values())
    texts = []
    for rep in reps(200):
        text = render_text(RICH, rep, plan.choices[rep.id])
        for span, times in source_counts.items():
            assert text.count(span) >= times, (span, text)
        assert_clean(text, allowed_chars(RICH, rep))
        texts.append(text)
    bodies = {render_body(RICH, plan.choices[i]) for i in ids}
    assert len(bodies) == 200  # the copies really vary ...
    # ... right next to protected content: the phrase before the phone number and the link changes.
    assert {"报名电话：", "报名热线：", "咨询电话："} <= {b.split("400-820-1234")[0].split("\n")[-1] for b in bodies}
    assert {"详情：", "详情请看：", "了解更多："} <= {b.split("https://")[0].split("\n")[-1] for b in bodies}


def test_pool_phrases_change_only_outside_protected_spans_and_alternatives() -> None:
    body = "「限时优惠」专场[[欢迎咨询|欢迎来电]]，今天限时优惠进行中"
    source = TextSource("t", body, ("「限时优惠」专场",))
    space = variation_space(source)
    assert [(s.kind, s.options) for s in space.slots if s.kind in ("alt", "pool")] == [
        ("alt", ("欢迎咨询", "欢迎来电")),
        ("pool", ("限时优惠", "限时特惠", "限时折扣")),
    ]
    for picks in itertools.product(*(range(len(s.options)) for s in space.slots)):
        out = render_body(source, space.choice(picks))
        assert out.startswith("「限时优惠」专场欢迎咨询，") or out.startswith("「限时优惠」专场欢迎来电，")


def test_no_tilde_after_numbers_and_no_emoji_after_links_or_hashtags() -> None:
    body = "现场价¥99。\n名额20个！\n前三名送一套。\n详情 https://example.com/x\n一起聊聊 #话题\n"
    source = TextSource("t", body)
    space = variation_space(source)
    assert {s.kind for s in space.slots} == {"punct", "emoji"}
    emoji = "".join(EMOJI)
    for picks in itertools.product(*(range(len(s.options)) for s in space.slots)):
        for breaks in range(space.break_styles):
            out = render_body(source, space.choice(picks, breaks))
            assert not re.search(r"[\d¥]~", out) and "一套~" not in out, out
            assert not re.search(rf"(example\.com/x|#话题) ?[{emoji}]", out), out


def test_english_phrases_keep_case_and_apostrophe_style() -> None:
    source = TextSource("t", "Don’t miss out! Contact us today.\nWe're excited to see you, so sign up now.")
    options = {s.options[0]: s.options for s in variation_space(source).slots if s.kind == "pool"}
    assert options["Don’t miss out"] == ("Don’t miss out", "Don’t miss it", "Don’t miss this")
    assert options["Contact us"] == ("Contact us", "Get in touch", "Reach out to us")
    assert options["We're excited to"] == ("We're excited to", "We're thrilled to", "We're delighted to")
    assert options["sign up now"] == ("sign up now", "register now", "sign up today")


# ---- assignment across reps ----------------------------------------------------------------


def test_demo_post_100_reps_distinct_and_within_policy() -> None:
    """Measured on the final texts (demo template: name, store, signature) AND on the bare bodies."""
    plan = plan_assignments(DEMO, [f"rep{i}" for i in range(100)], seed="posts/demo/revisions/1")
    assert plan.policy_met and plan.capacity_estimate >= 100 and plan.duplicates == 0
    texts = [render_text(DEMO, rep, plan.choices[rep.id]) for rep in reps(100)]
    final = text_report(texts)
    assert final.count == 100 and final.duplicates == 0 and final.jaccard_max <= 0.8
    bodies = [render_body(DEMO, plan.choices[f"rep{i}"]) for i in range(100)]
    bare = text_report(bodies)
    assert bare.duplicates == 0 and bare.jaccard_max <= 0.8
    assert bare.jaccard_max == pytest.approx(plan.max_jaccard)  # the planner measures what the report does


def test_farthest_point_assignment_beats_independent_random_draws() -> None:
    space = variation_space(DEMO)
    plan = plan_assignments(DEMO, [f"rep{i}" for i in range(100)], seed="s")
    rnd = random.Random(7)
    drawn = [space.choice([rnd.randrange(len(s.options)) for s in space.slots], rnd.randrange(space.break_styles))
             for _ in range(100)]
    random_report = text_report([render_body(DEMO, c) for c in drawn])
    planned = text_report([render_body(DEMO, c) for c in plan.choices.values()])
    assert planned.jaccard_max < random_report.jaccard_max
    assert planned.duplicates == 0


def test_a_tiny_space_reports_a_small_capacity() -> None:
    source = TextSource("t", "门店今天正常营业，地址见主页。")  # no alternatives, no pool phrase
    space = variation_space(source)
    assert 1 < space.size < 100
    plan = plan_assignments(source, [f"rep{i}" for i in range(100)])
    assert plan.capacity_estimate <= space.size and plan.capacity_estimate < 100
    assert plan.capacity_exact and not plan.policy_met
    assert len(plan.choices) == 100 and plan.duplicates == 100 - len({render_body(source, c) for c in plan.choices.values()})
    assert plan.duplicates > 0 and plan.max_jaccard == 1.0
    few = plan_assignments(source, ["a", "b", "c"])
    assert few.policy_met and len({render_body(source, c) for c in few.choices.values()}) == 3


def test_a_stricter_policy_lowers_the_capacity() -> None:
    ids = [f"rep{i}" for i in range(60)]
    loose = plan_assignments(DEMO, ids, Policy(max_jaccard=0.8))
    strict = plan_assignments(DEMO, ids, Policy(max_jaccard=0.5))
    assert strict.capacity_estimate < loose.capacity_estimate and not strict.policy_met


def test_plans_are_deterministic_and_independent_of_rep_order() -> None:
    ids = [f"rep{i}" for i in range(40)]
    first = plan_assignments(DEMO, ids, seed="r1")
    again = plan_assignments(DEMO, list(reversed(ids)), seed="r1")
    assert first.choices == again.choices and first.capacity_estimate == again.capacity_estimate
    other = plan_assignments(DEMO, ids, seed="r2")
    assert other.choices != first.choices  # a new revision hands the variants out differently
    rep = reps(1)[0]
    choice = first.choices["rep0"]
    assert render_text(DEMO, rep, choice) == render_text(DEMO, rep, VariantChoice.from_json(json.dumps(choice.to_json())))


def test_plans_do_not_depend_on_hash_randomisation() -> None:
    code = ("import json; from tests.test_distribution_text import DEMO;"
            "from services.distribution.domain.text import plan_assignments;"
            "p = plan_assignments(DEMO, [f'rep{i}' for i in range(30)], seed='x');"
            "print(json.dumps([p.capacity_estimate, {r: c.to_json() for r, c in sorted(p.choices.items())}]))")
    outputs = set()
    for hash_seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_extend_plan_keeps_existing_choices_and_adds_far_ones() -> None:
    ids = [f"rep{i}" for i in range(50)]
    plan = plan_assignments(DEMO, ids, seed="r1")
    more = [f"new{i}" for i in range(30)] + ids[:5]
    extended = extend_plan(DEMO, plan, more, Policy())
    assert all(extended.choices[r] == plan.choices[r] for r in ids)
    assert set(extended.choices) == set(ids) | {f"new{i}" for i in range(30)}
    assert extended.order[:50] == plan.order
    report = text_report([render_body(DEMO, c) for c in extended.choices.values()])
    assert report.duplicates == 0 and report.jaccard_max <= 0.8 and extended.policy_met
    assert report.jaccard_max == pytest.approx(extended.max_jaccard)
    assert extend_plan(DEMO, extended, ["new3"], Policy()).choices == extended.choices


def test_extend_plan_refuses_choices_from_another_post() -> None:
    plan = plan_assignments(DEMO, ["a", "b"])
    with pytest.raises(TextRenderError) as err:
        extend_plan(RICH, plan, ["c"], Policy())
    assert err.value.reason == "choice"


def test_plan_for_1000_reps_on_a_500_character_post() -> None:
    from bench.text_variation import POST_500, SOURCE_500

    assert 450 <= len(POST_500) <= 550
    ids = [f"rep{i}" for i in range(1000)]
    plan = plan_assignments(SOURCE_500, ids, seed="big")
    assert len(plan.choices) == 1000 and plan.policy_met and plan.duplicates == 0
    report = text_report([render_body(SOURCE_500, plan.choices[i]) for i in ids])
    assert report.duplicates == 0 and report.jaccard_max <= 0.8
    assert report.jaccard_max == pytest.approx(plan.max_jaccard)


# ---- rendering -------------------------------------------------------------------------------


def test_render_uses_the_rep_template_and_fields() -> None:
    rep = RepFields("r1", "王小明", signature="祝好", store="静安店", region="华东", team="一组")
    source = TextSource("标题", "你好[[呀|啊]]", (), "{{ post.title }}|{{ body }}|{{ rep.display_name }}|{{ rep.store }}|"
                                                      "{{ rep.region }}|{{ rep.team }}|{{ rep.signature }}")
    space = variation_space(source)
    assert render_text(source, rep, space.canonical_choice()).startswith("标题|你好呀|王小明|静安店|华东|一组|祝好")
    assert render_text(source, rep, VariantChoice(), post_title="新标题").startswith("新标题|你好呀")


def test_a_template_error_at_render_time_is_a_domain_error() -> None:
    # Valid when saved (the sample rep takes the other branch), broken for one rep.
    template = '{% if rep.team == "x" %}{{ rep.store | truncate(rep.region) }}{% endif %}{{ body }}'
    assert templates.validate_rep_template(template) == template
    source = TextSource("t", "你好", (), template)
    ok = RepFields("r1", "甲", store="店", region="华东", team="y")
    assert render_text(source, ok, VariantChoice()).startswith("你好")
    with pytest.raises(TextRenderError) as err:
        render_text(source, RepFields("r2", "乙", store="店", region="华东", team="x"), VariantChoice())
    assert err.value.reason == "template" and isinstance(err.value, FailedPrecondition) and "r2" in err.value.message


@pytest.mark.parametrize("template", [
    '{% if rep.team == "x" %}{{ rep.display_name }}{% else %}{{ body }}{% endif %}',  # drops the body for one rep
    '{{ body | truncate(40) }}',
    '{{ body | replace("¥99/节", "¥9/节") }}',
])
def test_a_template_that_loses_protected_content_is_refused(template: str) -> None:
    assert templates.validate_rep_template(template) == template
    source = TextSource("t", DEMO_BODY, DEMO_PHRASES, template)
    with pytest.raises(TextRenderError) as err:
        render_text(source, RepFields("r", "甲", team="x"), VariantChoice())
    assert err.value.reason == "protected_span"


def test_a_choice_for_another_space_or_out_of_range_is_refused() -> None:
    rep = reps(1)[0]
    foreign = variation_space(RICH).canonical_choice()
    space = variation_space(DEMO)
    bad = [foreign, VariantChoice((99,) * len(space.slots)), VariantChoice((0,)), VariantChoice(breaks=5)]
    for choice in bad:
        with pytest.raises(TextRenderError) as err:
            render_text(DEMO, rep, choice)
        assert err.value.reason == "choice"
    with pytest.raises(TextRenderError):
        VariantChoice.from_json({"picks": ["a"]})


def test_a_malformed_body_is_a_domain_error() -> None:
    with pytest.raises(TextRenderError) as err:
        variation_space(TextSource("t", "坏[[的"))
    assert err.value.reason == "body"


def test_rep_fields_with_invisible_characters_are_refused() -> None:
    with pytest.raises(TextRenderError) as err:
        render_text(DEMO, RepFields("r", "甲\u200b乙"), VariantChoice())
    assert err.value.reason == "invisible_character"


def test_line_break_styles() -> None:
    paragraphs = TextSource("t", "第一段很好。\n\n第二段也好。\n")
    space = variation_space(paragraphs)
    assert space.break_mode == "compact"
    assert render_body(paragraphs, space.choice((0,) * len(space.slots), 1)).startswith("第一段很好。\n第二段")
    lines = TextSource("t", "第一行很好。\n第二行也好。\n1. 列表一\n2. 列表二")
    space = variation_space(lines)
    assert space.break_mode == "airy"
    out = render_body(lines, space.choice((0,) * len(space.slots), 1))
    assert out.startswith("第一行很好。\n\n第二行也好。\n1. 列表一\n2. 列表二")


# ---- normalisation and similarity --------------------------------------------------------------


def test_normalise() -> None:
    assert normalise("  限时\u200b优惠！\n\n  ＡＢＣ\t１２３ ") == "限时优惠! ABC 123"
    assert normalise("a\u2060b\ufeffc\u200dd") == "abcd"


def test_jaccard() -> None:
    assert jaccard("限时优惠欢迎咨询", "限时\u200b优惠欢迎咨询") == 1.0
    assert jaccard("abcdefgh", "stuvwxyz") == 0.0
    assert jaccard("abcdef", "abcdeg") == pytest.approx(1 / 3)  # {abcde, bcdef} vs {abcde, bcdeg}
    assert jaccard("", "") == 1.0 and jaccard("ab", "ab") == 1.0


def test_text_report_matches_brute_force() -> None:
    rnd = random.Random(3)
    words = ["限时优惠", "欢迎咨询", "名额有限", "先到先得", "今天", "门店", "！", "。", "✨"]
    texts = ["".join(rnd.choice(words) for _ in range(rnd.randrange(3, 9))) for _ in range(40)]
    texts += [texts[0], texts[1] + "  ", "短", ""]
    report = text_report(texts)
    sims = sorted(jaccard(a, b) for a, b in itertools.combinations(texts, 2))
    assert report.count == 44 and report.pairs == len(sims) and report.duplicates == 2
    assert report.jaccard_min == pytest.approx(sims[0]) and report.jaccard_max == pytest.approx(sims[-1])
    mid = len(sims) // 2
    assert report.jaccard_median == pytest.approx(sims[mid] if len(sims) % 2 else (sims[mid - 1] + sims[mid]) / 2)
    assert text_report(["x"]).pairs == 0


# ---- property: random bodies --------------------------------------------------------------------

LITERAL_PIECES = ["今天", "我们的", "门店", "活动", "上新了", "，", "。", "！", "~", "、", "：", " ", "\n", "\n\n",
                  "Hello", " we ", "Sign up now", "contact us", "限时优惠", "欢迎咨询", "来啦", "每天", "名额有限",
                  "先到先得", "详情：", "报名电话：", "Don't miss out", "thank you", ".", "!", "三步", "一起来",
                  "大家好", "包邮", "etc.", "No."]
SPANS = ["¥99/节", "$19.99", "https://example.com/a?b=1", "www.example.cn/x", "400-820-1234", "138 0013 8000",
         "2026-12-01", "12月1日", "10:00", "#话题", "#早教", "@某人", "@Anna_Lee", "50%", "8.8折", "2026年11月11日",
         "info@example.com", "第3期"]
EDITOR_PHRASES = ["「小小探索家」早教中心", "Acme Pro", "暖冬羽绒服"]
OPTION_WORDS = ["", "真的", "超值", "限时优惠", "欢迎私信", "哦", "really", "now", "！", "~"]
TEMPLATES = ["", "{{ body }}", "{{ rep.display_name }}：\n{{ body }}\n—— {{ rep.signature }}",
             "{% if rep.store %}【{{ rep.store }}】{% endif %}{{ body }}{{ rep.signature | default('') }}"]
element = st.one_of(
    st.tuples(st.just("lit"), st.lists(st.sampled_from(LITERAL_PIECES), min_size=1, max_size=4).map("".join)),
    st.tuples(st.just("lit"), st.text(alphabet="的一是不了人我在有这中大来上个们到说和地也时道出要下得可你年生会好看学家",
                                      min_size=1, max_size=8)),
    st.tuples(st.just("span"), st.sampled_from(SPANS)),
    st.tuples(st.just("phrase"), st.sampled_from(EDITOR_PHRASES)),
    st.tuples(st.just("alt"), st.lists(st.sampled_from(OPTION_WORDS), min_size=2, max_size=4, unique=True)
              .filter(lambda o: any(o))),
)
rep_text = st.text(alphabet="王李张小明静安店华东一组Ab ", max_size=8)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elements=st.lists(element, min_size=1, max_size=14), template=st.sampled_from(TEMPLATES),
       name=rep_text.filter(str.strip), store=rep_text, signature=rep_text, rnd=st.randoms(use_true_random=False))
def test_property_protected_spans_survive_and_nothing_hidden_is_added(
        elements: list[tuple[str, object]], template: str, name: str, store: str, signature: str, rnd: random.Random) -> None:
    body = "".join(f"[[{'|'.join(v)}]]" if kind == "alt" else str(v) for kind, v in elements)  # type: ignore[arg-type]
    phrases = tuple(dict.fromkeys(str(v) for kind, v in elements if kind == "phrase"))
    source = TextSource("标题", body, phrases, template)
    rep = RepFields("r", name, signature=signature, store=store)
    literals = literal_texts(body)
    expected = {str(v): sum(t.count(str(v)) for t in literals) for kind, v in elements if kind in ("span", "phrase")}
    space = variation_space(source)
    choices = [space.canonical_choice()] + [
        space.choice([rnd.randrange(len(s.options)) for s in space.slots], rnd.randrange(space.break_styles))
        for _ in range(4)]
    allowed = allowed_chars(source, rep)
    for choice in choices:
        out = render_text(source, rep, choice)
        for span, times in expected.items():
            assert out.count(span) >= times, (span, out)
        assert_clean(out, allowed)
