"""Where a load test may point: loopback only, unless the operator says otherwise."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeTarget(ValueError):
    pass


def normalise_target(url: str) -> str:
    """`host:port`, `http://…`, `ws://…` -> `http(s)://host:port` without a trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTarget(f"not an http(s) URL: {url!r}")
    return f"{scheme}://{parts.netloc}".rstrip("/")


def ws_base(url: str) -> str:
    return "wss://" + url[len("https://"):] if url.startswith("https://") else "ws://" + url[len("http://"):]


def is_loopback_host(host: str) -> bool:
    """True when every address `host` resolves to is a loopback address."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {str(info[4][0]) for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_targets(targets: list[str], allow_remote: bool) -> None:
    """Refuse non-loopback targets unless `allow_remote`."""
    for url in targets:
        host = urlsplit(url).hostname or ""
        if not is_loopback_host(host) and not allow_remote:
            raise UnsafeTarget(
                f"refusing to load {url}: it is not a loopback address. Load tests send thousands "
                f"of connections; pass --allow-remote if you own that system and mean it.")
