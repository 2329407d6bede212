"""Which webhook URLs the control plane may call. A user names the URL, and the control plane sits next to internal
services: an endpoint on a loopback, private, link-local (cloud metadata), multicast or reserved address is refused,
both when it is created and at every try (the name may resolve elsewhere later), unless private URLs are allowed
(BUGAGARIC_WEBHOOK_ALLOW_PRIVATE_URLS). A try connects to the address that was checked, never re-resolving."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass

import httpx

MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


class UrlRefused(ValueError):
    """The URL may not be used; the message says why (it starts with `url:`)."""


@dataclass(frozen=True)
class ResolvedUrl:
    url: httpx.URL  # as given
    address: str  # the checked IP address to connect to


def parse_url(raw: str) -> httpx.URL:
    """An absolute http(s) URL with a host and no credentials, or UrlRefused."""
    text = (raw or "").strip()
    if not text:
        raise UrlRefused("url: give the receiver's http:// or https:// URL")
    if len(text) > MAX_URL_CHARS or not text.isascii() or not text.isprintable():
        raise UrlRefused(f"url: give an http(s) URL of at most {MAX_URL_CHARS} printable ASCII characters")
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        raise UrlRefused(f"url: not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise UrlRefused(f"url: only http:// and https:// URLs are allowed (got {url.scheme or 'no'} scheme)")
    if not url.host:
        raise UrlRefused("url: the URL has no host")
    if not (_HOST_NAME.fullmatch(url.host) or ":" in url.host):  # a name, an IPv4 or an (already checked) IPv6
        raise UrlRefused(f"url: {url.host!r} is not a valid host name")
    if url.userinfo:
        raise UrlRefused("url: credentials in the URL are not allowed; requests are signed with the webhook's secret")
    return url


def forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


async def resolve(url: httpx.URL, *, allow_private: bool) -> ResolvedUrl:
    """The address to connect to: the host's first address, after checking every address it resolves to (one bad
    address is enough to refuse: which one a client would pick is not ours to guess)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"url: the host {url.host!r} cannot be resolved ({exc})") from None
    except TimeoutError:
        raise UrlRefused(f"url: resolving the host {url.host!r} took over {RESOLVE_TIMEOUT_SECONDS:g}s") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise UrlRefused(f"url: the host {url.host!r} has no address")
    if not allow_private:
        bad = [address for address in addresses if forbidden_address(address)]
        if bad:
            raise UrlRefused(f"url: the host {url.host!r} resolves to {bad[0]}, a loopback, private or link-local "
                             "address; webhooks may only call public addresses (an operator can allow private ones "
                             "with BUGAGARIC_WEBHOOK_ALLOW_PRIVATE_URLS=1)")
    return ResolvedUrl(url, addresses[0])
