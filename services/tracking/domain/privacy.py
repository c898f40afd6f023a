"""IP addresses, never stored in clear: truncated to a network, then a salted HMAC of that.

IPv4 is cut to its /24 and IPv6 to its /48 (a site), so the stored value identifies a
neighbourhood of addresses, not a device; IPv4-mapped IPv6 (``::ffff:1.2.3.4``) counts as
IPv4. ``hash_ip`` returns ``HMAC-SHA256(salt, "<network>")`` in hex: stable for one salt
(rate limiting and "unique networks" work), unlinkable across salts, and without the salt
not reversible even though there are only 2**24 IPv4 /24 networks. Garbage in -> "".
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

IPV4_PREFIX = 24
IPV6_PREFIX = 48
HASH_HEX_CHARS = 32  # 128 bits: no collisions in practice, half the row size of a full digest
MAX_INPUT_CHARS = 100
MAX_REFERRER_CHARS = 2_048


def _parse(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(ip, str) or len(ip) > MAX_INPUT_CHARS:
        return None
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):  # "[2001:db8::1]" as in URLs
        text = text[1:-1]
    text = text.partition("%")[0]  # an IPv6 zone ("fe80::1%eth0") says nothing about the network
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def truncate_ip(ip: str) -> str:
    """The address's network as "a.b.c.0/24" or "2001:db8:1::/48" (never the address itself); "" for garbage."""
    address = _parse(ip)
    if address is None:
        return ""
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def hash_ip(ip: str, salt: str | bytes) -> str:
    """Salted HMAC-SHA256 of the truncated address, hex; "" for anything that is not an IP address."""
    key = salt.encode() if isinstance(salt, str) else salt
    if not key:
        raise ValueError("salt: required (configure one; an unsalted hash of a /24 is trivially reversible)")
    network = truncate_ip(ip)
    if not network:
        return ""
    return hmac.new(key, network.encode(), hashlib.sha256).hexdigest()[:HASH_HEX_CHARS]


def referrer_host(referrer: str) -> str:
    """Only the host of a referrer URL, lower-cased (paths and queries can carry personal data); "" for garbage."""
    if not isinstance(referrer, str) or len(referrer) > MAX_REFERRER_CHARS:
        return ""
    try:
        parts = urlsplit(referrer.strip())
        host = parts.hostname or ""
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not host or not all(c.isalnum() or c in ".-" for c in host):
        return ""
    if _parse(host) is not None:
        return ""  # an address as referrer is someone's machine more often than a site: not kept
    return host
