"""Redis Cluster: `redis+cluster://` URLs give a cluster-aware client.

    LIVECORE_REDIS_URL=redis+cluster://[user:password@]host1:port1[,host2:port2...][?opts]
    LIVECORE_REDIS_URL=rediss+cluster://...            (TLS)

The hosts are seed nodes: the client asks the first one that answers for the
slot map, then talks to every primary directly. More than one seed only
matters for starting up while a seed is down. Query options are those of
redis-py's `from_url`. There is only database 0 in a cluster.

What makes LiveCore cluster-safe is elsewhere: every key of a show or a deal
carries its hash tag (`livecore.keys`), so each Redis function call, each
`XREAD` of a show's three streams and each same-show pipeline touches one
slot. FUNCTION LOAD is sent to every primary (redis-py routes it to
`PRIMARIES`), and `RedisFunctions` reloads the library if a node lost it.

One thing redis-py does not do well for us: FCALL and XREAD have "movable
keys", so to find their slot the stock client asks a node `COMMAND GETKEYS`
first, twice per command (three round trips for one call, and two more per
command in a pipeline). `LiveCoreCluster` reads the keys from the arguments
instead, the way redis-py already does for EVAL/EVALSHA.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
DEFAULT_PORT = 6379


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> tuple[str, list[tuple[str, int]]]:
    """Split a `redis+cluster://` URL into a plain redis-py URL naming the
    first seed (credentials, path and options kept) and the list of seeds."""
    scheme, sep, rest = url.partition("://")
    base = CLUSTER_SCHEMES.get(scheme.lower())
    if not sep or base is None:
        raise ValueError(f"not a Redis Cluster URL (want redis+cluster:// or rediss+cluster://): {url!r}")
    parts = urlsplit(f"{base}://{rest}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    seeds = [_host_port(item, url) for item in hosts.split(",") if item.strip()]
    if not seeds:
        raise ValueError(f"Redis Cluster URL names no host: {url!r}")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"Redis Cluster has only database 0: {url!r}")
    host, port = seeds[0]
    first = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{userinfo}{at}{first}"
    return urlunsplit((base, netloc, "", parts.query, "")), seeds


def _host_port(item: str, url: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):
        host, _, tail = item[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"empty host in Redis Cluster URL: {url!r}")
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port {port_text!r} in Redis Cluster URL: {url!r}") from None
    return host, port


def command_keys(command: str, args: tuple[Any, ...]) -> list[Any] | None:
    """The keys of FCALL/FCALL_RO/XREAD read from their arguments (the
    arguments after the command name); None for any other command."""
    name = command.upper()
    if name in ("FCALL", "FCALL_RO"):
        if len(args) < 2:
            return None
        return list(args[2:2 + int(args[1])])
    if name == "XREAD":
        for i, arg in enumerate(args):
            word = arg.decode() if isinstance(arg, bytes) else arg
            if isinstance(word, str) and word.upper() == "STREAMS":
                tail = args[i + 1:]
                return list(tail[:len(tail) // 2])
    return None


class LiveCoreCluster(RedisCluster):
    """RedisCluster that routes FCALL and XREAD without asking the server."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        keys = command_keys(command, args)
        if not keys:
            return await super()._determine_slot(command, *args)
        slots = {self.keyslot(key) for key in keys}
        if len(slots) != 1:
            raise RedisClusterException(f"{command} - all keys must map to the same key slot")
        return slots.pop()


def cluster_client(url: str, **kwargs: Any) -> LiveCoreCluster:
    """A cluster client for a `redis+cluster://` URL; kwargs as for RedisCluster
    (`max_connections` is per node)."""
    plain, seeds = parse_cluster_url(url)
    extra = [ClusterNode(host, port) for host, port in seeds[1:]]
    if extra:
        kwargs["startup_nodes"] = extra
    client = LiveCoreCluster.from_url(plain, **kwargs)
    assert isinstance(client, LiveCoreCluster)
    return client
