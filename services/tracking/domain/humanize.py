"""Reads in words a rep can say: "昨天 21:14 阅读《标题》13 分钟" / "read 'X' for 13 min yesterday 21:14".

Times are shown in the rep's time zone (``Asia/Shanghai`` by default): "today 09:03",
"yesterday 21:14", a weekday for the last week, a date for anything older (with the year
when it is not this year's). Durations are whole minutes rounded down ("13 min"), hours
past an hour, and "<1 min" for a read under a minute. ``locale`` is "zh" (default) or
"en"; any tag starting with "en" is English, anything else Chinese. Naive datetimes are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"
DEFAULT_LOCALE = "zh"
MAX_TITLE_CHARS = 40

_WEEKDAYS = {"zh": ("周一", "周二", "周三", "周四", "周五", "周六", "周日"),
             "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def zone(tz: str | tzinfo | None) -> tzinfo:
    """A tzinfo from an IANA name (or the default); ValueError for an unknown name."""
    if tz is None or tz == "":
        return ZoneInfo(DEFAULT_TZ)
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ValueError, LookupError) as e:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"tz: unknown time zone {tz!r}") from e


def language(locale: str | None) -> str:
    return "en" if (locale or "").lower().startswith("en") else "zh"


def aware(dt: datetime) -> datetime:
    """``dt`` with UTC assumed when it is naive."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def format_duration(engaged_ms: int, locale: str | None = DEFAULT_LOCALE) -> str:
    """ "13 分钟" / "13 min"; "1 小时 5 分钟" / "1 h 5 min"; "不到 1 分钟" / "<1 min"."""
    lang = language(locale)
    minutes = max(0, engaged_ms) // 60_000
    if minutes < 1:
        return "<1 min" if lang == "en" else "不到 1 分钟"
    hours, minutes = divmod(minutes, 60)
    if lang == "en":
        return f"{minutes} min" if not hours else (f"{hours} h {minutes} min" if minutes else f"{hours} h")
    return f"{minutes} 分钟" if not hours else (f"{hours} 小时 {minutes} 分钟" if minutes else f"{hours} 小时")


def format_when(when: datetime, now: datetime, tz: str | tzinfo | None = DEFAULT_TZ, locale: str | None = DEFAULT_LOCALE) -> str:
    """ "today 09:03", "yesterday 21:14", "Wed 21:14" (2-6 days ago), "Mar 5 21:14", "Mar 5, 2025 21:14"
    (zh: "今天 09:03", "昨天 21:14", "周三 21:14", "3月5日 21:14", "2025年3月5日 21:14")."""
    lang, z = language(locale), zone(tz)
    local, today = aware(when).astimezone(z), aware(now).astimezone(z).date()
    clock = local.strftime("%H:%M")
    days = (today - local.date()).days
    if days == 0:
        day = "today" if lang == "en" else "今天"
    elif days == 1:
        day = "yesterday" if lang == "en" else "昨天"
    elif 2 <= days <= 6:
        day = _WEEKDAYS[lang][local.weekday()]
    elif local.year == today.year:
        day = f"{_MONTHS[local.month - 1]} {local.day}" if lang == "en" else f"{local.month}月{local.day}日"
    else:
        day = f"{_MONTHS[local.month - 1]} {local.day}, {local.year}" if lang == "en" else f"{local.year}年{local.month}月{local.day}日"
    return f"{day} {clock}"


def short_title(title: str, limit: int = MAX_TITLE_CHARS) -> str:
    """Whitespace collapsed, cut with "…" past ``limit`` characters."""
    flat = " ".join(title.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def quote_title(title: str, locale: str | None = DEFAULT_LOCALE) -> str:
    return f"'{short_title(title)}'" if language(locale) == "en" else f"《{short_title(title)}》"


def describe_read(title: str, engaged_ms: int, when: datetime, now: datetime, tz: str | tzinfo | None = DEFAULT_TZ,
                  locale: str | None = DEFAULT_LOCALE) -> str:
    """ "昨天 21:14 阅读《标题》13 分钟" / "read 'Title' for 13 min yesterday 21:14"."""
    at, duration, quoted = format_when(when, now, tz, locale), format_duration(engaged_ms, locale), quote_title(title, locale)
    if language(locale) == "en":
        return f"read {quoted} for {duration} {at}"
    return f"{at} 阅读{quoted}{duration}"


def describe_talking_point(top_topic: str, last_title: str, locale: str | None = DEFAULT_LOCALE) -> str:
    """ "最关注「少儿编程」，最近读了《标题》" / "Most interested in 'Coding'; last read 'Title'" (either part may be empty)."""
    en = language(locale) == "en"
    parts = []
    if top_topic:
        parts.append(f"Most interested in '{short_title(top_topic)}'" if en else f"最关注「{short_title(top_topic)}」")
    if last_title:
        parts.append(f"last read {quote_title(last_title, locale)}" if en else f"最近读了{quote_title(last_title, locale)}")
    text = ("; " if en else "，").join(parts)
    return text[:1].upper() + text[1:] if en else text


def describe_activity(contact_name: str, title: str, engaged_ms: int | None = None, locale: str | None = DEFAULT_LOCALE) -> str:
    """Live activity: "优优妈妈 正在阅读《标题》" / "优优妈妈 is reading 'Title' now"; with ``engaged_ms`` (the
    view ended) "优优妈妈 读完《标题》，13 分钟" / "优优妈妈 read 'Title' for 13 min"."""
    who, quoted = short_title(contact_name), quote_title(title, locale)
    en = language(locale) == "en"
    if engaged_ms is None:
        return f"{who} is reading {quoted} now" if en else f"{who} 正在阅读{quoted}"
    duration = format_duration(engaged_ms, locale)
    return f"{who} read {quoted} for {duration}" if en else f"{who} 读完{quoted}，{duration}"
