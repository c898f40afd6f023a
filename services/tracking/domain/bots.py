"""Bot and headless-browser detection from the user agent, so machines stay out of tags and leads.

A shared link is fetched by more than people: search crawlers, the link-preview fetchers of
chat apps (WhatsApp, Telegram, Slack, Facebook, Twitter), HTTP libraries and scripts, and
headless browsers (monitoring, Lighthouse, scrapers). Their views are still recorded (editors
may want to see them) but flagged: ``classify_user_agent(ua).is_bot``.

The rules are conservative on purpose: a false positive hides a real customer from a rep,
so only well-known marks count. In particular WeChat's in-app browser (``MicroMessenger``),
QQ, UC, Baidu and Sogou *browsers*, mobile Safari and Android Chrome/WebView are people.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

MAX_UA_CHARS = 512  # every mark below sits well inside this; longer agents are cut before matching


@dataclass(frozen=True)
class BotVerdict:
    """``reason`` is "" for a person, else "<kind>:<what>": kind is empty, crawler, preview, tool, headless or generic."""

    is_bot: bool
    reason: str = ""


HUMAN = BotVerdict(False, "")

# (pattern, reason), first match wins; matched case-insensitively against the agent.
_RULES: tuple[tuple[str, str], ...] = (
    # Headless and automated browsers.
    (r"headlesschrome", "headless:HeadlessChrome"),
    (r"phantomjs", "headless:PhantomJS"),
    (r"puppeteer", "headless:Puppeteer"),
    (r"playwright", "headless:Playwright"),
    (r"selenium|webdriver|chromedriver|geckodriver", "headless:Selenium"),
    (r"lighthouse|speed insights|pagespeed", "headless:Lighthouse"),
    (r"\bslimerjs\b", "headless:SlimerJS"),
    # Search and AI crawlers.
    (r"googlebot|adsbot-google|mediapartners-google|google-inspectiontool|apis-google|google-read-aloud|storebot-google",
     "crawler:Googlebot"),
    (r"bingbot|bingpreview|msnbot|adidxbot", "crawler:bingbot"),
    (r"baiduspider", "crawler:Baiduspider"),
    (r"yandex(?:bot|images|mobilebot|accessibilitybot|metrika|direct)", "crawler:YandexBot"),
    (r"sogou\b[^;)]*\bspider", "crawler:Sogou"),
    (r"360spider|haosouspider", "crawler:360Spider"),
    (r"bytespider", "crawler:Bytespider"),
    (r"yisouspider", "crawler:YisouSpider"),
    (r"petalbot", "crawler:PetalBot"),
    (r"applebot", "crawler:Applebot"),
    (r"duckduckbot|duckassistbot", "crawler:DuckDuckBot"),
    (r"yahoo! slurp", "crawler:Slurp"),
    (r"gptbot|chatgpt-user|oai-searchbot|claudebot|claude-web|anthropic-ai|ccbot|perplexitybot|amazonbot|meta-externalagent",
     "crawler:AI"),
    (r"ahrefsbot|semrushbot|mj12bot|dotbot|blexbot|dataforseobot|seznambot|ia_archiver|archive\.org_bot", "crawler:SEO"),
    # Link previews of chat and social apps (the app's own in-app browser is matched nowhere here).
    (r"facebookexternalhit|facebookcatalog|meta-externalfetcher", "preview:facebookexternalhit"),
    (r"telegrambot", "preview:TelegramBot"),
    (r"twitterbot", "preview:Twitterbot"),
    (r"slackbot|slack-imgproxy", "preview:Slackbot"),
    (r"^whatsapp/", "preview:WhatsApp"),
    (r"discordbot", "preview:Discordbot"),
    (r"linkedinbot", "preview:LinkedInBot"),
    (r"pinterestbot|pinterest/0\.", "preview:Pinterest"),
    (r"skypeuripreview", "preview:Skype"),
    (r"redditbot|embedly|iframely|vkshare|bitlybot", "preview:link-preview"),
    # HTTP libraries and command-line tools.
    (r"^curl/", "tool:curl"),
    (r"^wget/|\bwget/\d", "tool:wget"),
    (r"python-requests|python-urllib|python-httpx|aiohttp/|\bhttpx/|\bscrapy\b", "tool:python"),
    (r"go-http-client", "tool:Go-http-client"),
    (r"^java/|apache-httpclient|jakarta commons-httpclient", "tool:java"),
    (r"^okhttp/[\d.]+$", "tool:okhttp"),
    (r"node-fetch|^axios/|\bundici\b|^got \(|postmanruntime|insomnia/", "tool:node"),
    (r"libwww-perl|lwp::simple|^php/|guzzlehttp|^ruby\b|^faraday|^httpie/|^powershell/|winhttp", "tool:other"),
    # Whatever announces itself: "+http://..." contact links, "(compatible; XBot/1.0)", "...Bot/2" or "spider".
    (r"\+https?://|\bcompatible;\s*[\w .-]*(?:bot|crawler|spider)\b", "generic:self-declared"),
    (r"[a-z0-9_-]*(?:bot|crawler|spider|scraper)/\d", "generic:bot-token"),
    (r"(?:^|[\s;(])(?:bot|crawler|spider|scraper|crawl)(?:[\s;)/]|$)", "generic:bot-token"),
)
_COMPILED = tuple((re.compile(pattern, re.IGNORECASE), reason) for pattern, reason in _RULES)
_BARE = re.compile(r"^(?:mozilla/\d\.\d|-|\?|null|none|undefined|unknown)$", re.IGNORECASE)


def classify_user_agent(user_agent: str | None) -> BotVerdict:
    """Bot or person, and why. Empty or placeholder agents ("-", "Mozilla/5.0" alone) count as bots."""
    ua = (user_agent or "").strip()[:MAX_UA_CHARS]
    return _classify(ua)


@functools.lru_cache(maxsize=4096)  # a post's audience shares a handful of agents
def _classify(ua: str) -> BotVerdict:
    if not ua:
        return BotVerdict(True, "empty")
    if _BARE.match(ua):
        return BotVerdict(True, "empty:placeholder")
    for pattern, reason in _COMPILED:
        if pattern.search(ua):
            return BotVerdict(True, reason)
    return HUMAN


def is_bot(user_agent: str | None) -> bool:
    return classify_user_agent(user_agent).is_bot


# Browser families for analytics ("which apps do customers read in"), most specific first.
_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"wxwork/", "WeCom"), (r"micromessenger/", "WeChat"), (r"dingtalk", "DingTalk"), (r"aweme|bytedancewebview", "Douyin"),
    (r"\bqq/|mqqbrowser", "QQ"), (r"ucbrowser", "UC"), (r"baiduboxapp|baidubrowser", "Baidu"), (r"sogoumobilebrowser|\bse 2\.x", "Sogou"),
    (r"huaweibrowser", "Huawei"), (r"miuibrowser", "MIUI"), (r"edg(?:e|a|ios)?/", "Edge"), (r"firefox/|fxios/", "Firefox"),
    (r"chrome/|crios/", "Chrome"), (r"safari/|applewebkit", "Safari"),
)
_FAMILY_RES = tuple((re.compile(pattern, re.IGNORECASE), family) for pattern, family in _FAMILIES)


def user_agent_family(user_agent: str | None) -> str:
    """A coarse family to store instead of the full agent: "bot", "WeChat", "WeCom", "Chrome", "Safari", ... or "Other"."""
    ua = (user_agent or "").strip()[:MAX_UA_CHARS]
    if _classify(ua).is_bot:
        return "bot"
    return next((family for pattern, family in _FAMILY_RES if pattern.search(ua)), "Other")
