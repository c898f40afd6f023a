"""Curated English marketing phrases: each group's members read naturally in one another's place.

Written in lower case with a plain apostrophe; matching ignores case and accepts a curly
apostrophe, and a replacement takes the capitalisation and apostrophe style of the words it
replaces. Whole words only. Same rules as ``phrases_zh``: interchangeable in ordinary sales
copy, no numbers, no member in two groups.
"""

from __future__ import annotations

GROUPS: tuple[tuple[str, ...], ...] = (
    ("for a limited time only", "for a limited time", "for a short time only"),
    ("limited-time offer", "limited time offer", "time-limited offer"),
    ("don't miss out", "don't miss it", "don't miss this"),
    ("sign up now", "register now", "sign up today"),
    ("contact us", "get in touch", "reach out to us"),
    ("find out more", "learn more", "read more"),
    ("feel free to", "don't hesitate to"),
    ("book now", "reserve now", "book today"),
    ("free gift", "complimentary gift"),
    ("great value", "excellent value", "real value"),
    ("best-selling", "top-selling", "bestselling"),
    ("brand new", "all-new"),
    ("see you there", "hope to see you there", "we'd love to see you there"),
    ("hi everyone", "hello everyone", "hi all"),
    ("check out", "take a look at", "have a look at"),
    ("perfect for", "ideal for", "great for"),
    ("spots are limited", "places are limited", "space is limited"),
    ("first come, first served", "first-come, first-served"),
    ("message me", "send me a message", "drop me a message"),
    ("we're excited to", "we're thrilled to", "we're delighted to"),
    ("thank you", "many thanks"),
    ("join us", "come join us", "come and join us"),
    ("don't forget to", "remember to", "be sure to"),
    ("high quality", "top quality", "premium quality"),
    ("special offer", "special deal", "exclusive offer"),
    ("while stocks last", "while supplies last"),
    ("shop now", "buy now", "order now"),
)
