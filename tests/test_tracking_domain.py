"""Tracking rules tested directly: view sessions, bots, reading time, interest, leads, analytics, limits, privacy."""

from __future__ import annotations

import ipaddress
import math
import random
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.shared.errors import InvalidArgument
from services.tracking.domain import analytics, engagement, interest, leads, ratelimit, reading
from services.tracking.domain.analytics import Share, ViewRecord, build_forward_tree, post_analytics, top_spreaders
from services.tracking.domain.bots import BotVerdict, classify_user_agent, user_agent_family
from services.tracking.domain.engagement import (
    HEARTBEAT_INTERVAL_MS,
    MAX_DELTA_MS,
    MAX_SEQS_ABOVE,
    VIEW_IDLE_TIMEOUT_MS,
    Heartbeat,
    ViewState,
    apply_heartbeats,
    close,
    is_expired,
    new_view,
    same_visit,
)
from services.tracking.domain.humanize import describe_activity, describe_read, describe_talking_point, format_duration, format_when
from services.tracking.domain.interest import DEFAULT_RULES, DecayedScore, RuleError, TagRule, Visit, evaluate_tags, weight
from services.tracking.domain.leads import lead_candidate, leads_for_day, rank_leads
from services.tracking.domain.privacy import hash_ip, referrer_host, truncate_ip

START = 1_800_000_000_000  # a view's start, server unix ms
SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 12, 10, 0, tzinfo=SH)  # a Thursday
PROPS = settings(max_examples=150, deadline=None)


def hb(seq: int, delta: int = 10_000, scroll: int = 0, at: int | None = None, view: str = "v1") -> Heartbeat:
    return Heartbeat(view, seq, delta, scroll, START + seq * HEARTBEAT_INTERVAL_MS if at is None else at)


def view() -> ViewState:
    return new_view("v1", START)


# ---- view sessions ----------------------------------------------------------------------


def test_heartbeats_add_up_engaged_time_scroll_and_count() -> None:
    state, result = apply_heartbeats(view(), [hb(1, 10_000, 20), hb(2, 8_000, 55), hb(3, 9_500, 40)])
    assert (state.engaged_ms, state.max_scroll_percent, state.heartbeats) == (27_500, 55, 3)
    assert (result.accepted, result.duplicates, result.capped, result.rejected) == (3, 0, 0, 0)
    assert state.last_heartbeat_at == START + 30_000 and result.engaged_added_ms == 27_500


def test_a_replayed_batch_changes_nothing_and_counts_as_duplicates() -> None:
    batch = [hb(1), hb(2), hb(3)]
    once, _ = apply_heartbeats(view(), batch)
    twice, result = apply_heartbeats(once, batch)
    assert twice == once
    assert (result.accepted, result.duplicates, result.engaged_added_ms) == (0, 3, 0)


def test_the_same_seq_twice_in_one_batch_counts_once() -> None:
    state, result = apply_heartbeats(view(), [hb(1, 7_000), hb(1, 7_000)])
    assert state.engaged_ms == 7_000 and (result.accepted, result.duplicates) == (1, 1)


def test_out_of_order_heartbeats_across_batches_all_count() -> None:
    state, _ = apply_heartbeats(view(), [hb(3), hb(5)])
    assert state.seq_floor == 0 and state.seqs_above == (3, 5)
    state, result = apply_heartbeats(state, [hb(1), hb(2), hb(4)])
    assert result.accepted == 3 and state.heartbeats == 5 and state.engaged_ms == 50_000
    assert state.seq_floor == 5 and state.seqs_above == ()


@pytest.mark.parametrize(("delta", "counted"), [(MAX_DELTA_MS + 1, MAX_DELTA_MS), (3_600_000, MAX_DELTA_MS), (-5_000, 0)])
def test_an_inflated_or_negative_delta_is_clamped_and_reported_as_capped(delta: int, counted: int) -> None:
    state, result = apply_heartbeats(view(), [hb(1, delta, at=START + 60_000)])
    assert state.raw_engaged_ms == counted
    assert (result.accepted, result.capped) == (1, 1)


def test_a_delta_of_one_interval_plus_slack_is_not_capped() -> None:
    state, result = apply_heartbeats(view(), [hb(1, MAX_DELTA_MS, at=START + 60_000)])
    assert state.engaged_ms == MAX_DELTA_MS and result.capped == 0


def test_scroll_is_clamped_to_0_100_and_only_grows() -> None:
    state, _ = apply_heartbeats(view(), [hb(1, scroll=250), hb(2, scroll=30), hb(3, scroll=-4)])
    assert state.max_scroll_percent == 100
    state, _ = apply_heartbeats(view(), [hb(1, scroll=-4)])
    assert state.max_scroll_percent == 0


def test_engaged_time_never_exceeds_wall_time_since_start_plus_one_interval() -> None:
    # Thirty full heartbeats received within two seconds of the start: at most 2 s + one interval counts.
    burst = [hb(seq, MAX_DELTA_MS, at=START + 2_000) for seq in range(1, 31)]
    state, _ = apply_heartbeats(view(), burst)
    assert state.raw_engaged_ms == 30 * MAX_DELTA_MS
    assert state.engaged_ms == 2_000 + HEARTBEAT_INTERVAL_MS


def test_a_heartbeat_received_before_the_start_is_credited_at_most_one_interval() -> None:
    # Only server receive times count; another server's clock a little behind must not open a loophole.
    state, _ = apply_heartbeats(view(), [hb(1, MAX_DELTA_MS, at=START - 5_000)])
    assert state.engaged_ms == HEARTBEAT_INTERVAL_MS


def test_a_view_expires_after_30_minutes_without_heartbeats() -> None:
    state, _ = apply_heartbeats(view(), [hb(1, at=START + 10_000)])
    assert not is_expired(state, START + 10_000 + VIEW_IDLE_TIMEOUT_MS - 1)
    assert is_expired(state, START + 10_000 + VIEW_IDLE_TIMEOUT_MS)
    assert is_expired(new_view("v2", START), START + VIEW_IDLE_TIMEOUT_MS)


def test_a_heartbeat_after_the_idle_timeout_is_rejected_and_closes_the_view() -> None:
    state, _ = apply_heartbeats(view(), [hb(1, at=START + 10_000)])
    late = START + 10_000 + VIEW_IDLE_TIMEOUT_MS
    state, result = apply_heartbeats(state, [hb(2, at=late), hb(3, at=late + 10_000)])
    assert (result.accepted, result.rejected) == (0, 2)
    assert dict(result.rejected_reasons) == {"expired": 2}
    assert state.closed and state.engaged_ms == 10_000


def test_a_closed_view_takes_the_final_flush_but_nothing_later() -> None:
    state, _ = apply_heartbeats(view(), [hb(1, at=START + 10_000)])
    state = close(state, START + 12_000)
    state, result = apply_heartbeats(state, [hb(2, 2_000, at=START + 12_500), hb(3, 5_000, at=START + 12_000 + MAX_DELTA_MS + 1)])
    assert (result.accepted, dict(result.rejected_reasons)) == (1, {"closed": 1})
    assert state.engaged_ms == 12_000
    assert close(state, START + 99_000).closed_at == START + 12_000  # closing again keeps the first close


def test_rejected_heartbeats_stay_rejected_when_replayed() -> None:
    state = close(view(), START)
    batch = [hb(1, at=START + 60_000), hb(2, at=START + 70_000)]
    once, first = apply_heartbeats(state, batch)
    twice, second = apply_heartbeats(once, batch)
    assert once == twice == state and first.rejected == second.rejected == 2


@pytest.mark.parametrize(("heartbeat", "reason"), [
    (Heartbeat("other", 1, 1_000, 0, START), "wrong_view"),
    (Heartbeat("v1", 0, 1_000, 0, START), "invalid_seq"),
    (Heartbeat("v1", -3, 1_000, 0, START), "invalid_seq"),
    (Heartbeat("v1", engagement.SEQ_WINDOW + 1, 1_000, 0, START), "seq_out_of_range"),
])
def test_malformed_heartbeats_are_rejected_with_a_reason(heartbeat: Heartbeat, reason: str) -> None:
    state, result = apply_heartbeats(view(), [heartbeat])
    assert state == view() and dict(result.rejected_reasons) == {reason: 1}


def test_seq_memory_stays_bounded_and_a_late_gap_is_never_double_counted() -> None:
    # Seq 1 is lost; 2..200 arrive. The state keeps at most MAX_SEQS_ABOVE seqs, gives up the gap,
    # and counts each seq once even when everything is replayed.
    batch = [hb(seq, 1_000, at=START + 1_000_000) for seq in range(2, 201)]
    state, _ = apply_heartbeats(view(), batch)
    assert len(state.seqs_above) <= MAX_SEQS_ABOVE and state.heartbeats == 199
    state, result = apply_heartbeats(state, [*batch, hb(1, 1_000, at=START + 1_000_000)])
    assert result.accepted == 0 and state.raw_engaged_ms == 199_000


def test_view_state_round_trips_through_json() -> None:
    state, _ = apply_heartbeats(view(), [hb(1, 9_000, 30), hb(4, 12_000, 80)])
    state = close(state, START + 50_000)
    assert ViewState.from_dict(state.to_json()) == state
    assert ViewState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize(("change", "field"), [
    ({"view_id": ""}, "view_id"), ({"started_at": "x"}, "started_at"), ({"seqs_above": ["a"]}, "seqs_above"),
    ({"heartbeats": True}, "heartbeats"), ({"v": 99}, "v"), ({"closed_at": 1.5}, "closed_at"),
])
def test_a_malformed_stored_state_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    data = {**view().to_dict(), **change}
    with pytest.raises(ValueError, match=f"^{field}:"):
        ViewState.from_dict(data)


def test_batch_results_add_up_across_views() -> None:
    _, a = apply_heartbeats(view(), [hb(1), hb(1), hb(2, -1)])
    _, b = apply_heartbeats(new_view("v2", START), [hb(1, view="v2"), hb(2, view="v1")])
    total = a + b
    assert (total.accepted, total.duplicates, total.capped, total.rejected) == (3, 1, 1, 1)
    assert dict(total.rejected_reasons) == {"wrong_view": 1}


def test_groups_a_mixed_batch_per_view() -> None:
    groups = engagement.group_by_view([hb(1, view="a"), hb(1, view="b"), hb(2, view="a")])
    assert list(groups) == ["a", "b"] and [h.seq for h in groups["a"]] == [1, 2]


MIN = 60_000


@pytest.mark.parametrize(("opened", "last", "new", "joins"), [
    (0, 5 * MIN, 14 * MIN, True),  # 9 min after the last activity
    (0, 5 * MIN, 15 * MIN, True),  # exactly 10 min
    (0, 5 * MIN, 15 * MIN + 1, False),
    (0, 40 * MIN, 20 * MIN, True),  # a second tab while the first is still being read
    (30 * MIN, 35 * MIN, 10 * MIN, False),  # long before the visit began
])
def test_a_reopen_within_10_minutes_of_last_activity_joins_the_visit(opened: int, last: int, new: int, joins: bool) -> None:
    assert same_visit(opened, last, new) is joins


# Heartbeats within 20 min of the start (no idle expiry), seqs small enough that the bounded memory never gives a gap up.
heartbeat_st = st.builds(Heartbeat, st.just("v1"), st.integers(1, 40), st.integers(-50_000, 100_000), st.integers(-10, 150),
                         st.integers(START, START + 20 * MIN))
batch_st = st.lists(heartbeat_st, max_size=60)


@PROPS
@given(batch=batch_st)
def test_property_applying_a_batch_twice_equals_once(batch: list[Heartbeat]) -> None:
    once, _ = apply_heartbeats(view(), batch)
    twice, again = apply_heartbeats(once, batch)
    assert twice == once and again.accepted == 0


@PROPS
@given(data=st.data(), batch=batch_st)
def test_property_any_order_of_a_batch_gives_the_same_state(data: st.DataObject, batch: list[Heartbeat]) -> None:
    shuffled = data.draw(st.permutations(batch))
    assert apply_heartbeats(view(), shuffled)[0] == apply_heartbeats(view(), batch)[0]


@PROPS
@given(data=st.data(), batch=st.lists(heartbeat_st, max_size=40, unique_by=lambda h: h.seq))
def test_property_heartbeats_split_over_batches_in_any_order_add_up_the_same(data: st.DataObject, batch: list[Heartbeat]) -> None:
    shuffled = data.draw(st.permutations(batch))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(batch)), max_size=5)))
    state = view()
    for lo, hi in zip([0, *cuts], [*cuts, len(batch)], strict=True):
        state, _ = apply_heartbeats(state, shuffled[lo:hi])
    assert state == apply_heartbeats(view(), batch)[0]


@PROPS
@given(batches=st.lists(batch_st, max_size=4))
def test_property_engaged_time_is_bounded_by_distinct_seqs_and_wall_time(batches: list[list[Heartbeat]]) -> None:
    state = view()
    for batch in batches:
        state, _ = apply_heartbeats(state, batch)
    distinct = {h.seq for batch in batches for h in batch}
    assert state.heartbeats <= len(distinct)
    assert 0 <= state.engaged_ms <= state.raw_engaged_ms <= len(distinct) * MAX_DELTA_MS
    if state.last_heartbeat_at is not None:
        assert state.engaged_ms <= max(0, state.last_heartbeat_at - START) + HEARTBEAT_INTERVAL_MS
    assert ViewState.from_dict(state.to_json()) == state


# ---- bots -------------------------------------------------------------------------------

BOT_AGENTS = [
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawler:Googlebot"),
    ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.199 "
     "Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawler:Googlebot"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 "
     "Safari/537.36", "crawler:bingbot"),
    ("Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", "crawler:Baiduspider"),
    ("Mozilla/5.0 (Linux;u;Android 4.2.2;zh-cn;) AppleWebKit/534.46 (KHTML,like Gecko) Version/5.1 Mobile Safari/10600.6.3 "
     "(compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", "crawler:Baiduspider"),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "crawler:YandexBot"),
    ("Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)", "crawler:Sogou"),
    ("Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/50.0.2661.102 Safari/537.36; 360Spider",
     "crawler:360Spider"),
    ("Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; "
     "spider-feedback@bytedance.com)", "crawler:Bytespider"),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "preview:facebookexternalhit"),
    ("Twitterbot/1.0", "preview:Twitterbot"),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "preview:Slackbot"),
    ("WhatsApp/2.23.20.0 A", "preview:WhatsApp"),
    ("TelegramBot (like TwitterBot)", "preview:TelegramBot"),
    ("curl/8.4.0", "tool:curl"),
    ("Wget/1.21.4", "tool:wget"),
    ("python-requests/2.31.0", "tool:python"),
    ("Go-http-client/1.1", "tool:Go-http-client"),
    ("Java/17.0.2", "tool:java"),
    ("okhttp/4.9.3", "tool:okhttp"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36",
     "headless:HeadlessChrome"),
    ("Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1", "headless:PhantomJS"),
    ("Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Mobile "
     "Safari/537.36 Chrome-Lighthouse", "headless:Lighthouse"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "crawler:SEO"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", "crawler:AI"),
    ("Mozilla/5.0 (compatible; SomeNewCrawler/0.3; +https://example.com/crawler)", "generic:self-declared"),
    ("", "empty"),
    ("   ", "empty"),
    ("-", "empty:placeholder"),
    ("Mozilla/5.0", "empty:placeholder"),
]

HUMAN_AGENTS = [
    # WeChat in-app browser, iOS and Android (XWEB), and WeCom.
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "MicroMessenger/8.0.44(0x18002c2d) NetType/WIFI Language/zh_CN",
    "Mozilla/5.0 (Linux; Android 13; V2219A Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/111.0.5563.116 Mobile Safari/537.36 XWEB/1110005 MMWEBSDK/20230805 MMWEBID/6781 MicroMessenger/8.0.42.2460(0x28002A3B) "
    "WeChat/arm64 Weixin NetType/5G Language/zh_CN ABI/arm64",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 wxwork/4.1.10 "
    "MicroMessenger/7.0.1 Language/zh ColorScheme/Light",
    # Mobile Safari, Android Chrome, desktop browsers.
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 "
    "Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
    # Chinese browsers and apps: QQ, UC, Baidu app, Sogou browser, Huawei, Xiaomi, Douyin, DingTalk.
    "Mozilla/5.0 (Linux; U; Android 12; zh-cn; PEHM00 Build/SKQ1.210216.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/109.0.5414.86 MQQBrowser/14.1 Mobile Safari/537.36 COVC/046401",
    "Mozilla/5.0 (Linux; U; Android 11; zh-CN; M2012K11AC Build/RKQ1.200826.002) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/100.0.4896.58 UCBrowser/15.5.2.1262 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "SP-engine/2.76.0 main/1.0 baiduboxapp/13.40.0.10 (Baidu; P2 16.5) NABar/1.0",
    "Mozilla/5.0 (Linux; Android 10; HMA-AL00 Build/HUAWEIHMA-AL00; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/99.0.4844.88 Mobile Safari/537.36 SogouMSE,SogouMobileBrowser/12.2.0",
    "Mozilla/5.0 (Linux; Android 12; NOH-AN00; HMSCore 6.11.0.302) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 "
    "HuaweiBrowser/14.0.1.300 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; U; Android 13; zh-cn; 2211133C Build/TKQ1.220905.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/100.0.4896.127 Mobile Safari/537.36 XiaoMi/MiuiBrowser/17.7.230828",
    "Mozilla/5.0 (Linux; Android 13; PHB110 Build/TP1A.220905.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/105.0.5195.136 Mobile Safari/537.36 aweme_270400 JsSdk/1.0 NetType/WIFI Channel/oppo_1128_64 app_version/27.4.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "AliApp(DingTalk/7.5.0) com.laiwang.DingTalk/30000000 Channel/201200 language/zh-Hans-CN",
    # A phone brand that ends in "bot" is still a phone.
    "Mozilla/5.0 (Linux; Android 9; CUBOT X19 Build/PPR1.180610.011) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 "
    "Mobile Safari/537.36",
    # okhttp next to a real WebView agent is an app, not a script.
    "Mozilla/5.0 (Linux; Android 12; SM-G991B Build/SP1A.210812.016; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/120.0.6099.43 Mobile Safari/537.36 okhttp/4.9.3",
]


@pytest.mark.parametrize(("agent", "reason"), BOT_AGENTS)
def test_known_bots_and_headless_browsers_are_flagged(agent: str, reason: str) -> None:
    verdict = classify_user_agent(agent)
    assert verdict.is_bot and verdict.reason == reason


@pytest.mark.parametrize("agent", HUMAN_AGENTS)
def test_real_browsers_including_wechat_are_not_flagged(agent: str) -> None:
    assert classify_user_agent(agent) == BotVerdict(False, "")


def test_a_missing_user_agent_is_a_bot() -> None:
    assert classify_user_agent(None).is_bot


@pytest.mark.parametrize(("index", "family"), [(0, "WeChat"), (1, "WeChat"), (2, "WeCom"), (3, "Safari"), (4, "Chrome"), (5, "Edge"),
                                               (6, "Firefox"), (7, "QQ"), (8, "UC"), (9, "Baidu"), (14, "DingTalk")])
def test_the_stored_agent_family_names_the_app_people_read_in(index: int, family: str) -> None:
    assert user_agent_family(HUMAN_AGENTS[index]) == family


def test_a_bot_family_is_bot_and_an_unknown_agent_is_other() -> None:
    assert user_agent_family("curl/8.4.0") == user_agent_family("") == "bot"
    assert user_agent_family("SomeReader 1.0 (KaiOS)") == "Other"


# ---- reading time -----------------------------------------------------------------------


def test_chinese_reads_at_350_characters_a_minute() -> None:
    assert reading.expected_reading_ms("启" * 700) == 120_000


def test_english_reads_at_220_words_a_minute() -> None:
    assert reading.expected_reading_ms(" ".join(["word"] * 440)) == 120_000


def test_mixed_text_counts_characters_and_words_and_ignores_punctuation() -> None:
    assert reading.count_text("5岁小姑娘的创造力启蒙三步走！Let's learn AI, 2026.") == (13, 5)


def test_images_add_time_first_ones_most() -> None:
    text = "启" * 3500  # ten minutes, well above the floor
    base = reading.expected_reading_ms(text)
    assert reading.expected_reading_ms(text, 1) - base == reading.IMAGE_FIRST_MS
    assert reading.expected_reading_ms(text, 20) - reading.expected_reading_ms(text, 19) == reading.IMAGE_MIN_MS


def test_a_tiny_post_still_expects_ten_seconds() -> None:
    assert reading.expected_reading_ms("") == reading.expected_reading_ms("好") == 10_000


@pytest.mark.parametrize(("engaged", "expected", "share"), [(0, 60_000, 0.0), (30_000, 60_000, 0.5), (180_000, 60_000, 1.0),
                                                            (-5, 60_000, 0.0), (5_000, 0, 1.0)])
def test_completeness_is_the_share_of_expected_time_capped_at_one(engaged: int, expected: int, share: float) -> None:
    assert reading.completeness(engaged, expected) == share


# ---- interest ---------------------------------------------------------------------------


def visit(vid: str, topics: tuple[str, ...], days_ago: float, engaged_s: float, expected_s: float = 300, *, bot: bool = False,
          title: str = "", post: str = "") -> Visit:
    return Visit(vid, post or f"p-{vid}", title or f"Title {vid}", topics, NOW - timedelta(days=days_ago), int(engaged_s * 1000),
                 int(expected_s * 1000), bot)


def test_a_three_hour_idle_tab_weighs_no_more_than_three_expected_reads() -> None:
    assert weight(3 * 3600_000, 300_000) == weight(900_000, 300_000)
    assert weight(900_000, 300_000) < 1


def test_weight_rewards_completeness_for_the_same_time() -> None:
    assert weight(60_000, 60_000) > weight(60_000, 600_000)


def test_weight_rewards_time_for_the_same_completeness() -> None:
    assert weight(600_000, 600_000) > weight(60_000, 60_000)


@PROPS
@given(a=st.integers(-10_000, 20_000_000), b=st.integers(-10_000, 20_000_000), expected=st.integers(0, 3_600_000))
def test_property_weight_is_in_0_1_and_never_drops_as_engaged_time_grows(a: int, b: int, expected: int) -> None:
    low, high = sorted((a, b))
    assert 0 <= weight(low, expected) <= weight(high, expected) <= 1


def test_a_score_halves_after_one_half_life() -> None:
    v = [visit("a", ("t",), 0, 600)]
    now_score = interest.topic_scores(v, NOW)["t"]
    assert interest.topic_scores(v, NOW + interest.HALF_LIFE)["t"] == pytest.approx(now_score / 2)
    week = timedelta(days=7)
    assert interest.topic_scores(v, NOW + week, week)["t"] == pytest.approx(now_score / 2)


def test_bot_visits_do_not_score_or_tag() -> None:
    visits = [visit("a", ("t",), 0, 900, bot=True), visit("b", ("t",), 1, 900, bot=True)]
    assert interest.topic_scores(visits, NOW) == {}
    assert evaluate_tags(visits, NOW) == []


visit_st = st.builds(
    lambda i, topics, days, engaged, expected: Visit(f"v{i}", "p", "T", topics, NOW - timedelta(days=days), engaged, expected),
    st.integers(0, 10_000), st.sampled_from([("a",), ("b",), ("a", "b")]), st.floats(-1, 60, allow_nan=False),
    st.integers(0, 3_600_000), st.integers(0, 900_000))


@PROPS
@given(data=st.data(), visits=st.lists(visit_st, max_size=20, unique_by=lambda v: v.visit_id))
def test_property_the_decayed_accumulator_equals_the_direct_sum(data: st.DataObject, visits: list[Visit]) -> None:
    acc = DecayedScore()
    for v in data.draw(st.permutations(visits)):  # events arrive in any order
        acc = acc.add(interest.visit_weight(v), v.started_at)
    direct = sum(interest.visit_weight(v) * interest.decay(NOW - v.started_at) for v in visits)
    assert acc.value_at(NOW) == pytest.approx(direct, rel=1e-9, abs=1e-12)


@PROPS
@given(visits=st.lists(visit_st, min_size=1, max_size=10, unique_by=lambda v: v.visit_id), growth=st.integers(0, 900_000))
def test_property_growing_a_visits_engaged_time_by_its_weight_delta_equals_recomputing(visits: list[Visit], growth: int) -> None:
    acc = DecayedScore()
    for v in visits:
        acc = acc.add(interest.visit_weight(v), v.started_at)
    first = visits[0]
    grown = Visit(first.visit_id, first.post_id, first.post_title, first.topics, first.started_at, first.engaged_ms + growth,
                  first.expected_ms)
    acc = acc.replace(interest.visit_weight(first), interest.visit_weight(grown), first.started_at)
    direct = sum(interest.visit_weight(v) * interest.decay(NOW - v.started_at) for v in [grown, *visits[1:]])
    assert acc.value_at(NOW) == pytest.approx(direct, rel=1e-9, abs=1e-12)


@PROPS
@given(visits=st.lists(visit_st, min_size=1, max_size=10, unique_by=lambda v: v.visit_id), growth=st.integers(0, 900_000),
       earlier=st.floats(0, 0.01, allow_nan=False))
def test_property_moving_a_visits_start_earlier_as_it_grows_equals_recomputing(visits: list[Visit], growth: int,
                                                                                earlier: float) -> None:
    """A view applied after a later view of its visit (another consumer had it) moves the visit's start back."""
    acc = DecayedScore()
    for v in visits:
        acc = acc.add(interest.visit_weight(v), v.started_at)
    first = visits[0]
    moved = Visit(first.visit_id, first.post_id, first.post_title, first.topics, first.started_at - timedelta(days=earlier),
                  first.engaged_ms + growth, first.expected_ms)
    acc = acc.move(interest.visit_weight(first), first.started_at, interest.visit_weight(moved), moved.started_at)
    direct = sum(interest.visit_weight(v) * interest.decay(NOW - v.started_at) for v in [moved, *visits[1:]])
    assert acc.value_at(NOW) == pytest.approx(direct, rel=1e-9, abs=1e-12)


@PROPS
@given(a=visit_st, b=visit_st, later_days=st.floats(0, 90, allow_nan=False))
def test_property_the_stored_strength_key_orders_visits_as_their_decayed_contributions_at_any_time(a: Visit, b: Visit,
                                                                                                   later_days: float) -> None:
    at = NOW + timedelta(days=later_days)
    ca, cb = (interest.visit_weight(v) * interest.decay(at - v.started_at) for v in (a, b))
    ka, kb = (interest.strength_key(interest.visit_weight(v), v.started_at) for v in (a, b))
    if not math.isclose(ca, cb, rel_tol=1e-9, abs_tol=1e-300):
        assert (ca > cb) is (ka > kb)


def test_default_rules_tag_a_returning_reader_strongly_and_a_one_time_reader_lightly() -> None:
    visits = [visit("a", ("edu",), 1, 400, title="启蒙三步走"), visit("b", ("edu",), 0.5, 300),
              visit("c", ("ins",), 2, 45)]
    tags = evaluate_tags(visits, NOW, topic_names={"edu": "少儿教育", "ins": "保险"})
    assert [(t.topic, t.label) for t in tags] == [("edu", "少儿教育·高"), ("ins", "保险·关注")]
    assert tags[0].visits == 2 and tags[0].engaged_seconds == 700


def test_tag_evidence_is_the_strongest_visits_with_post_title_time_and_seconds() -> None:
    visits = [visit("weak", ("t",), 0, 40), visit("strong", ("t",), 0.1, 800, title="标题", post="p9"),
              visit("mid", ("t",), 0.2, 200), visit("old", ("t",), 20, 800)]
    [tag] = evaluate_tags(visits, NOW, [TagRule("t", 60, 1, 30, "{topic}")], max_evidence=2)
    strong = tag.evidence[0]
    assert [e.visit_id for e in tag.evidence] == ["strong", "mid"]
    assert (strong.post_id, strong.post_title, strong.read_at, strong.engaged_seconds) == ("p9", "标题", NOW - timedelta(days=0.1), 800)
    assert strong.completeness == 1.0 and tag.evidence[1].completeness == pytest.approx(200 / 300)


def test_a_rule_only_counts_visits_inside_its_window() -> None:
    rule = TagRule("t", 0, 2, 7, "x")
    inside, edge, outside = visit("a", ("t",), 1, 60), visit("b", ("t",), 7, 60), visit("c", ("t",), 7.01, 60)
    assert [t.visits for t in evaluate_tags([inside, edge], NOW, [rule])] == [2]
    assert evaluate_tags([inside, outside], NOW, [rule]) == []


def test_a_rule_needs_its_minimum_visits_engaged_time_and_score() -> None:
    two = [visit("a", ("t",), 0, 100), visit("b", ("t",), 0, 100)]
    assert evaluate_tags(two, NOW, [TagRule("t", 200, 3, 30, "x")]) == []
    assert evaluate_tags(two, NOW, [TagRule("t", 201, 2, 30, "x")]) == []
    assert len(evaluate_tags(two, NOW, [TagRule("t", 200, 2, 30, "x")])) == 1
    assert evaluate_tags(two, NOW, [TagRule("t", 0, 1, 30, "x", min_score=5.0)]) == []


def test_idle_time_beyond_three_expected_reads_does_not_meet_a_rule() -> None:
    idle = [visit("a", ("t",), 0, 3 * 3600, expected_s=60)]
    assert evaluate_tags(idle, NOW, [TagRule("t", 181, 1, 30, "x")]) == []


def test_the_first_matching_rule_gives_the_topic_its_tag_and_topic_rules_apply_only_to_their_topic() -> None:
    rules = [TagRule("ins", 30, 1, 30, "保险意向·高"), TagRule("*", 30, 1, 30, "{topic}·关注")]
    tags = evaluate_tags([visit("a", ("ins", "edu"), 0, 600)], NOW, rules)
    assert sorted(t.label for t in tags) == ["edu·关注", "保险意向·高"]


def test_maintained_scores_are_used_when_given() -> None:
    tags = evaluate_tags([visit("a", ("t",), 0, 600)], NOW, [TagRule("t", 0, 1, 30, "x", min_score=2.0)], scores={"t": 2.5})
    assert [t.score for t in tags] == [2.5]


rule_st = st.builds(TagRule, st.just("a"), st.integers(0, 3_000), st.integers(1, 4), st.integers(1, 60), st.just("x"))


@PROPS
@given(visits=st.lists(visit_st, max_size=12, unique_by=lambda v: v.visit_id), rule=rule_st)
def test_property_a_tag_appears_exactly_when_the_window_holds_enough_visits_and_time(visits: list[Visit], rule: TagRule) -> None:
    inside = [v for v in visits if "a" in v.topics and v.started_at >= NOW - timedelta(days=rule.window_days)]
    counted_ms = sum(interest.effective_engaged_ms(v.engaged_ms, v.expected_ms) for v in inside)
    expected = len(inside) >= rule.min_visits and counted_ms >= rule.min_engaged_seconds * 1000
    tags = evaluate_tags(visits, NOW, [rule])
    assert bool(tags) is expected
    if tags:
        assert tags[0].visits == len(inside) and {e.visit_id for e in tags[0].evidence} <= {v.visit_id for v in inside}


def test_default_rules_are_valid() -> None:
    assert interest.validate_rules(DEFAULT_RULES) == DEFAULT_RULES


@pytest.mark.parametrize(("rule", "message"), [
    (TagRule("t", 0, 0, 30, "x"), "min_visits: must be >= 1"),
    (TagRule("t", -1, 1, 30, "x"), "min_engaged_seconds: must be >= 0"),
    (TagRule("t", 0, 1, 0, "x"), "window_days: must be >= 1"),
    (TagRule("t", 0, 1, 366, "x"), "window_days: must be <= 365"),
    (TagRule("t", 0, 1, 30, " "), "label: required"),
    (TagRule("t", 0, 1, 30, "x" * 41), "label: at most 40 characters, got 41"),
    (TagRule("t", 0, 1, 30, "a\u200bb"), "label: contains control or invisible characters"),
    (TagRule("", 0, 1, 30, "x"), 'topic: required (a topic id or "*")'),
    (TagRule("t", 0, 1, 30, "x", min_score=-1), "min_score: must be >= 0"),
    (TagRule("t", 0, 1, 30, "x", min_score=float("nan")), "min_score: must be a finite number or absent"),
    (TagRule("t", 0, 1.5, 30, "x"), "min_visits: must be an integer"),  # type: ignore[arg-type]
])
def test_an_invalid_rule_is_refused_naming_the_field(rule: TagRule, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        interest.validate_rule(rule)


def test_rule_errors_name_the_rule_position_and_map_to_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        interest.validate_rules([DEFAULT_RULES[0], TagRule("t", 0, 0, 30, "x")])
    assert caught.value.field == "rules[1].min_visits" and isinstance(caught.value, RuleError)


def test_rules_are_read_from_configuration_dicts() -> None:
    rule = interest.rule_from_dict({"topic": "ins", "min_engaged_seconds": 120, "min_visits": 2, "window_days": 14,
                                    "label": "保险意向·高"})
    assert rule == TagRule("ins", 120, 2, 14, "保险意向·高") and interest.rule_from_dict(rule.to_dict()) == rule
    with pytest.raises(RuleError, match="^min_vists: unknown field$"):
        interest.rule_from_dict({**rule.to_dict(), "min_vists": 2})
    with pytest.raises(RuleError, match="^label: required$"):
        interest.rule_from_dict({k: v for k, v in rule.to_dict().items() if k != "label"})


def test_the_timeline_lists_human_reads_newest_first() -> None:
    visits = [visit("old", ("t",), 3, 60), visit("new", ("t",), 0, 30), visit("bot", ("t",), 0, 30, bot=True)]
    assert [e.visit_id for e in interest.timeline(visits)] == ["new", "old"]


# ---- leads and wording ------------------------------------------------------------------


def test_last_nights_long_read_ranks_above_an_old_one_with_reason_and_talking_point() -> None:
    yesterday = datetime(2026, 11, 11, 21, 14, tzinfo=SH)
    hot = [Visit("h1", "p1", "5岁小姑娘的创造力启蒙三步走", ("edu",), yesterday, 13 * 60_000 + 20_000, 300_000)]
    cold = [visit("c1", ("ins",), 6, 900)]
    ranked = leads_for_day([("cold", "老王", cold), ("hot", "李女士", hot)], None, NOW, topic_names={"edu": "少儿教育"})
    assert [lead.contact_id for lead in ranked] == ["hot", "cold"]
    assert ranked[0].reason == "昨天 21:14 阅读《5岁小姑娘的创造力启蒙三步走》13 分钟"
    assert ranked[0].talking_point == "最关注「少儿教育」，最近读了《5岁小姑娘的创造力启蒙三步走》"
    english = leads_for_day([("hot", "Ms Li", hot)], None, NOW, locale="en", topic_names={"edu": "Kids education"})
    assert english[0].reason == "read '5岁小姑娘的创造力启蒙三步走' for 13 min yesterday 21:14"
    assert english[0].talking_point == "Most interested in 'Kids education'; last read '5岁小姑娘的创造力启蒙三步走'"
    assert (ranked[0].top_topic, ranked[0].top_topic_id, ranked[0].last_read.post_id) == ("少儿教育", "edu", "p1")
    assert ranked[0].last_read.completeness == 1.0


def test_lead_order_is_deterministic_for_ties() -> None:
    same = [visit("x", ("t",), 1, 300)]
    later = [visit("y", ("t",), 1, 300)]
    contacts = [("c", "C", same), ("a", "A", same), ("b", "B", same), ("z", "Z", later)]
    orders = {tuple(lead.contact_id for lead in leads_for_day(random.Random(i).sample(contacts, 4), None, NOW)) for i in range(10)}
    assert orders == {("a", "b", "c", "z")}
    # Equal scores: the latest activity first.
    recent = leads.LeadCandidate("m", "M", 1.0, NOW, *[leads.Read("p", "T", NOW, 60_000)] * 2)
    older = leads.LeadCandidate("a", "A", 1.0, NOW - timedelta(hours=1), *[leads.Read("p", "T", NOW, 60_000)] * 2)
    assert [lead.contact_id for lead in rank_leads([older, recent], now=NOW)] == ["m", "a"]


def test_contacts_with_only_bot_or_stale_or_empty_reads_are_not_leads() -> None:
    contacts = [("bot", "B", [visit("b", ("t",), 0, 600, bot=True)]), ("stale", "S", [visit("s", ("t",), 8, 600)]),
                ("bounce", "E", [visit("e", ("t",), 0, 0)])]
    assert leads_for_day(contacts, None, NOW) == []


def test_a_past_days_leads_ignore_later_reads() -> None:
    contact = [visit("today", ("t",), 0, 600), visit("before", ("t",), 3, 60)]
    past_day = (NOW - timedelta(days=2)).date()
    candidate = lead_candidate("c", "C", contact, leads.ranking_time(past_day, NOW))
    assert candidate is not None and candidate.last_read.at == NOW - timedelta(days=3)
    assert leads.ranking_time(past_day, NOW) == datetime(2026, 11, 10, 23, 59, 59, 999999, tzinfo=SH)
    assert leads.ranking_time(NOW.date(), NOW) == NOW


def test_lead_limit_keeps_the_best() -> None:
    contacts = [(f"c{i}", f"C{i}", [visit(f"v{i}", ("t",), i / 10, 600)]) for i in range(5)]
    assert [lead.contact_id for lead in leads_for_day(contacts, None, NOW, limit=2)] == ["c0", "c1"]


@pytest.mark.parametrize(("when", "zh", "en"), [
    (datetime(2026, 11, 12, 9, 3, tzinfo=SH), "今天 09:03", "today 09:03"),
    (datetime(2026, 11, 11, 21, 14, tzinfo=SH), "昨天 21:14", "yesterday 21:14"),
    (datetime(2026, 11, 11, 16, 30, tzinfo=UTC), "今天 00:30", "today 00:30"),  # UTC's yesterday is Shanghai's today
    (datetime(2026, 11, 9, 8, 0, tzinfo=SH), "周一 08:00", "Mon 08:00"),
    (datetime(2026, 11, 5, 8, 0, tzinfo=SH), "11月5日 08:00", "Nov 5 08:00"),
    (datetime(2025, 3, 5, 8, 0, tzinfo=SH), "2025年3月5日 08:00", "Mar 5, 2025 08:00"),
])
def test_read_times_are_told_relative_to_today_in_the_reps_time_zone(when: datetime, zh: str, en: str) -> None:
    assert format_when(when, NOW) == zh
    assert format_when(when, NOW, locale="en-US") == en


def test_the_time_zone_is_configurable() -> None:
    when = datetime(2026, 11, 11, 21, 14, tzinfo=SH)  # 13:14 UTC
    assert format_when(when, NOW, "UTC", "en") == "yesterday 13:14"
    assert format_when(when, NOW, "America/New_York", "en") == "today 08:14"  # New York's now is 11-11 21:00
    with pytest.raises(ValueError, match="^tz:"):
        format_when(when, NOW, "Mars/Olympus")


@pytest.mark.parametrize(("ms", "zh", "en"), [
    (0, "不到 1 分钟", "<1 min"), (59_999, "不到 1 分钟", "<1 min"), (60_000, "1 分钟", "1 min"),
    (13 * 60_000 + 59_000, "13 分钟", "13 min"), (65 * 60_000, "1 小时 5 分钟", "1 h 5 min"), (120 * 60_000, "2 小时", "2 h"),
])
def test_durations_are_whole_minutes_with_a_floor_message_for_short_reads(ms: int, zh: str, en: str) -> None:
    assert (format_duration(ms), format_duration(ms, "en")) == (zh, en)


def test_a_short_read_of_a_long_title_reads_naturally() -> None:
    title = "一个很长很长的标题" * 10
    text = describe_read(title, 20_000, NOW - timedelta(minutes=5), NOW)
    assert text.startswith("今天 09:55 阅读《一个很长很长") and text.endswith("…》不到 1 分钟") and len(text) < 70
    assert describe_read("Title", 20_000, NOW, NOW, locale="en") == "read 'Title' for <1 min today 10:00"
    assert describe_talking_point("", "T", "en") == "Last read 'T'"


def test_live_activity_reads_naturally() -> None:
    assert describe_activity("优优妈妈", "启蒙三步走") == "优优妈妈 正在阅读《启蒙三步走》"
    assert describe_activity("Ms Li", "Title", locale="en") == "Ms Li is reading 'Title' now"
    assert describe_activity("优优妈妈", "启蒙三步走", 13 * 60_000) == "优优妈妈 读完《启蒙三步走》，13 分钟"
    assert describe_activity("Ms Li", "Title", 20_000, "en") == "Ms Li read 'Title' for <1 min"


# ---- analytics --------------------------------------------------------------------------


def record(i: int, viewer: str, engaged_ms: int, copy: str = "c1", rep: str = "r1", bot: bool = False) -> ViewRecord:
    return ViewRecord(f"v{i}", viewer, copy, rep, engaged_ms, bot)


def test_post_analytics_count_views_and_unique_viewers_without_bots() -> None:
    views = [record(1, "a", 5_000), record(2, "a", 50_000), record(3, "b", 700_000), record(4, "bot", 1_000, bot=True)]
    stats = post_analytics(views)
    assert (stats.views, stats.unique_viewers, stats.bot_views) == (3, 2, 1)
    assert dict(stats.engaged.buckets) == {"<10s": 1, "10-30s": 0, "30-60s": 1, "1-3min": 0, "3-10min": 0, ">10min": 1}


@pytest.mark.parametrize(("ms", "bucket"), [(9_999, "<10s"), (10_000, "10-30s"), (59_999, "30-60s"), (60_000, "1-3min"),
                                            (179_999, "1-3min"), (180_000, "3-10min"), (600_000, ">10min")])
def test_engaged_time_buckets_have_inclusive_lower_bounds(ms: int, bucket: str) -> None:
    assert analytics.bucket_of(ms) == bucket


def test_percentiles_are_nearest_rank() -> None:
    d = analytics.distribution(range(100, 0, -1))
    assert d.percentiles_ms == {50: 50, 75: 75, 90: 90, 99: 99} and d.mean_ms == 50.5
    assert analytics.distribution([]).percentiles_ms == {} and analytics.distribution([]).median_ms == 0


def test_variants_compare_views_median_and_mean_per_copy_and_per_rep() -> None:
    views = [record(1, "a", 10_000, "c1", "r1"), record(2, "b", 20_000, "c1", "r1"), record(3, "c", 90_000, "c1", "r1"),
             record(4, "d", 40_000, "c2", "r2"), record(5, "d", 60_000, "c3", "r2")]
    by_copy = {v.key: v for v in post_analytics(views).variants}
    assert (by_copy["c1"].views, by_copy["c1"].median_ms, by_copy["c1"].mean_ms) == (3, 20_000, 40_000)
    assert (by_copy["c2"].rep_id, by_copy["c2"].copy_id) == ("r2", "c2")
    by_rep = post_analytics(views, by="rep").variants
    assert [(v.rep_id, v.copy_id) for v in by_rep] == [("r1", "c1"), ("r2", "")]
    assert [(v.key, v.views, v.unique_viewers, v.median_ms, v.mean_ms) for v in by_rep] == [
        ("r1", 3, 3, 20_000, 40_000), ("r2", 2, 1, 40_000, 50_000)]


def test_forward_tree_ranks_spreaders_by_views_downstream_of_them() -> None:
    shares = [Share("root", "", "r1", 5), Share("a", "root", "r1", 2), Share("b", "root", "r1", 1), Share("a1", "a", "r1", 10),
              Share("a2", "a", "r1", 3), Share("a11", "a1", "r1", 4)]
    tree = build_forward_tree(shares)
    assert tree.downstream == {"root": 20, "a": 17, "b": 0, "a1": 4, "a2": 0, "a11": 0}
    assert [(s.share_id, s.downstream_views, s.descendants, s.depth) for s in top_spreaders(tree)] == [
        ("root", 20, 5, 0), ("a", 17, 3, 1), ("a1", 4, 1, 2)]


def test_a_share_whose_parent_is_unknown_or_itself_is_a_root() -> None:
    tree = build_forward_tree([Share("x", "gone", "r1", 3), Share("y", "x", "r1", 2), Share("s", "s", "r1", 1)])
    assert tree.roots == ("s", "x") and tree.downstream["x"] == 2


def test_a_cycle_is_cut_at_its_smallest_share_and_counts_each_view_once() -> None:
    shares = [Share("b", "a", "r", 1), Share("c", "b", "r", 2), Share("a", "c", "r", 4), Share("d", "c", "r", 8)]
    tree = build_forward_tree(shares)
    assert tree.roots == ("a",) and tree.downstream == {"a": 11, "b": 10, "c": 8, "d": 0}


def test_a_very_long_forward_chain_is_fine() -> None:
    n = 20_000
    tree = build_forward_tree([Share(f"s{i:05d}", f"s{i - 1:05d}" if i else "", "r", 1) for i in range(n)])
    assert tree.downstream["s00000"] == n - 1 and tree.depth[f"s{n - 1:05d}"] == n - 1


@st.composite
def forests(draw: st.DrawFn) -> list[Share]:
    n = draw(st.integers(0, 40))
    shares = []
    for i in range(n):
        parent = draw(st.one_of(st.just(""), st.just("unknown"), st.integers(0, max(0, i - 1)).map(lambda p: f"s{p}")))
        shares.append(Share(f"s{i}", parent if i else "", "r", draw(st.integers(0, 50))))
    return draw(st.permutations(shares))


@PROPS
@given(shares=forests())
def test_property_downstream_views_equal_a_brute_force_walk_up_the_parents(shares: list[Share]) -> None:
    known = {s.share_id: s for s in shares}
    brute = dict.fromkeys(known, 0)
    for s in shares:
        parent = s.parent_share_id
        while parent in known:
            brute[parent] += s.views
            parent = known[parent].parent_share_id
    assert build_forward_tree(shares).downstream == brute


# ---- rate limiting ----------------------------------------------------------------------


def test_a_burst_is_allowed_then_the_sustained_rate() -> None:
    state: float | None = None
    results = []
    for _ in range(6):
        ok, state = ratelimit.allow(state, 100.0, rate=1.0, burst=5)
        results.append(ok)
    assert results == [True] * 5 + [False]
    assert ratelimit.allow(state, 100.9, 1.0, 5)[0] is False and ratelimit.allow(state, 101.0, 1.0, 5)[0] is True


def test_a_denied_request_is_not_charged() -> None:
    _, state = ratelimit.allow(None, 0.0, 1.0, 1)
    ok, after = ratelimit.allow(state, 0.5, 1.0, 1)
    assert not ok and after == state


def test_a_flooding_visitor_does_not_limit_another() -> None:
    states: dict[str, float | None] = {}
    limit = ratelimit.VISITOR_HEARTBEATS
    for i in range(1_000):
        _, states["flood"] = ratelimit.allow(states.get("flood"), 10 + i / 1000, limit.rate, limit.burst)
    ok, _ = ratelimit.allow(states.get("calm"), 11.0, limit.rate, limit.burst)
    assert ok and not ratelimit.allow(states["flood"], 11.0, limit.rate, limit.burst)[0]


def test_retry_after_says_when_a_request_fits_again() -> None:
    state: float | None = None
    for _ in range(3):
        _, state = ratelimit.allow(state, 50.0, 2.0, 3)
    wait = ratelimit.retry_after(state, 50.0, 2.0, 3)
    assert wait > 0 and not ratelimit.allow(state, 50.0 + wait - 0.01, 2.0, 3)[0]
    assert ratelimit.allow(state, 50.0 + wait + 1e-6, 2.0, 3)[0]
    assert ratelimit.retry_after(None, 0.0, 1.0, 2, cost=3) == math.inf


@pytest.mark.parametrize(("rate", "burst", "cost", "field"), [(0, 1, 1, "rate"), (1, 0, 1, "burst"), (1, 1, -1, "cost")])
def test_rate_limit_arguments_are_checked(rate: float, burst: int, cost: int, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        ratelimit.allow(None, 0.0, rate, burst, cost)


@PROPS
@given(gaps=st.lists(st.floats(0, 2, allow_nan=False), max_size=200), rate=st.sampled_from([0.5, 2.0, 7.0, 200.0]),
       burst=st.integers(1, 20), cost=st.integers(1, 3), start=st.sampled_from([0.0, 1.8e9]))
def test_property_allowed_events_never_exceed_burst_plus_rate_times_elapsed(gaps: list[float], rate: float, burst: int, cost: int,
                                                                            start: float) -> None:
    state: float | None = None
    now, allowed = start, 0
    for gap in gaps:
        now += gap
        ok, state = ratelimit.allow(state, now, rate, burst, cost)
        allowed += cost if ok else 0
    assert allowed <= burst + rate * (now - start) + ratelimit.SLACK_INTERVALS + rate * 1e-6


# ---- privacy ----------------------------------------------------------------------------


def test_addresses_in_one_network_share_a_hash_and_other_networks_do_not() -> None:
    assert hash_ip("203.0.113.7", "salt") == hash_ip("203.0.113.250", "salt") == hash_ip("::ffff:203.0.113.9", "salt")
    assert hash_ip("203.0.114.7", "salt") != hash_ip("203.0.113.7", "salt")
    assert hash_ip("2001:db8:1:2::1", "salt") == hash_ip("2001:db8:1:ffff::9", "salt") != hash_ip("2001:db8:2::1", "salt")
    assert hash_ip("203.0.113.7", "salt") != hash_ip("203.0.113.7", "other salt")
    assert re.fullmatch(r"[0-9a-f]{32}", hash_ip("203.0.113.7", b"salt"))


@pytest.mark.parametrize("garbage", ["", "   ", "not an ip", "999.1.1.1", "1.2.3", "1.2.3.4:8080", "1.2.3.4, 5.6.7.8", "::g", "x" * 10_000])
def test_garbage_is_not_an_address(garbage: str) -> None:
    assert hash_ip(garbage, "salt") == "" and truncate_ip(garbage) == ""


def test_truncation_keeps_only_the_network() -> None:
    assert truncate_ip(" 198.51.100.23 ") == "198.51.100.0/24"
    assert truncate_ip("[2001:db8:abcd:12::1]") == "2001:db8:abcd::/48"
    assert truncate_ip("fe80::1%eth0") == "fe80::/48"


@pytest.mark.parametrize(("referrer", "host"), [
    ("https://mp.weixin.qq.com/s?__biz=MzA&mid=1&sn=abc", "mp.weixin.qq.com"),
    ("http://user:secret@Example.COM:8080/path?q=phone", "example.com"),
    ("https://203.0.113.9/page", ""), ("javascript:alert(1)", ""), ("android-app://com.tencent.mm/", ""), ("", ""),
    ("not a url", ""), ("https://exa mple.com/", ""),
])
def test_only_the_referrers_host_is_kept(referrer: str, host: str) -> None:
    assert referrer_host(referrer) == host


def test_hashing_without_a_salt_is_refused() -> None:
    with pytest.raises(ValueError, match="^salt:"):
        hash_ip("1.2.3.4", "")


@PROPS
@given(address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), salt=st.binary(min_size=1, max_size=32))
def test_property_the_clear_address_never_appears_in_the_output(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                                                 salt: bytes) -> None:
    text = str(address)
    out = hash_ip(text, salt)
    assert re.fullmatch(r"[0-9a-f]{32}", out) and text not in out
    network = ipaddress.ip_network(truncate_ip(text))
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    assert (mapped or address) in network and network.prefixlen == (24 if network.version == 4 else 48)
