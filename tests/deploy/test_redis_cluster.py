"""LiveCore on a real 3-master Redis Cluster (valkey, cluster-enabled).

- URL parsing and key extraction (pure);
- the Redis Functions library reaches every primary, FCALL/XREAD are routed
  without COMMAND GETKEYS round trips, a node that lost the library is reloaded;
- a flash deal through two `livecore serve` processes on the cluster: exactly
  `quantity` concurrent claims succeed, for deals on different shards at once;
- a show across two nodes: a viewer on node A gets the host's announcement
  sent through node B.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.asyncio.cluster import RedisCluster

from livecore.embedded import free_port
from livecore.redis_cluster import LiveCoreCluster, command_keys, is_cluster_url, parse_cluster_url
from livecore.services import Services, redis_client
from livecore.settings import Settings
from tests.deploy.cluster import LocalCluster
from tests.support import ADMIN, SECRET, WS, Backends, ServerProc, create_show, mint, server_env

AUTH = {"authorization": f"Bearer {ADMIN}"}

# ---- pure ------------------------------------------------------------------


def test_cluster_urls() -> None:
    assert is_cluster_url("redis+cluster://h:1") and is_cluster_url("REDISS+CLUSTER://h:1")
    assert not is_cluster_url("redis://h:1/0") and not is_cluster_url("unix:///tmp/r.sock")
    assert parse_cluster_url("redis+cluster://a:7000,b:7001,c") == (
        "redis://a:7000", [("a", 7000), ("b", 7001), ("c", 6379)])
    assert parse_cluster_url("rediss+cluster://u:p%40ss@a:1,[::1]:2/0?ssl_cert_reqs=none") == (
        "rediss://u:p%40ss@a:1?ssl_cert_reqs=none", [("a", 1), ("::1", 2)])
    assert parse_cluster_url("redis+cluster://[::1]:7000")[0] == "redis://[::1]:7000"
    for bad in ("redis://a:1", "redis+cluster://", "redis+cluster://a:1/3", "redis+cluster://a:x"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)


def test_command_keys() -> None:
    assert command_keys("FCALL", ("lc_claim", 2, "k1", "k2", "a1")) == ["k1", "k2"]
    assert command_keys("fcall_ro", ("f", "0")) == []
    assert command_keys("XREAD", ("COUNT", 5, "BLOCK", 10, "STREAMS", "s1", "s2", "0-0", "1-0")) == ["s1", "s2"]
    assert command_keys("XREAD", (b"streams", "s1", "$")) == ["s1"]
    assert command_keys("GET", ("k",)) is None


def test_factory_picks_the_client() -> None:
    assert isinstance(redis_client("redis+cluster://127.0.0.1:1,127.0.0.1:2"), LiveCoreCluster)
    assert not isinstance(redis_client("redis://127.0.0.1:1/0"), RedisCluster)


# ---- the cluster -------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def cluster_services(valkey_cluster: LocalCluster, backends: Backends) -> AsyncIterator[Services]:
    settings = Settings(redis_url=valkey_cluster.url, database_url=backends.database_url,
                        secret=SECRET, redis_prefix=f"lcc{uuid.uuid4().hex[:6]}")
    svc = await Services.create(settings)
    yield svc
    await svc.aclose()


def shard_of(rc: RedisCluster, key: str) -> str:
    node = rc.get_node_from_key(key)
    assert node is not None
    return node.name


def cluster_of(svc: Services) -> LiveCoreCluster:
    assert isinstance(svc.redis, LiveCoreCluster)
    return svc.redis


async def test_library_on_every_primary_and_reloaded(cluster_services: Services,
                                                     valkey_cluster: LocalCluster) -> None:
    rc = cluster_of(cluster_services)
    primaries = rc.get_primaries()
    assert sorted(n.port for n in primaries) == sorted(valkey_cluster.ports)
    for node in primaries:
        libs = await rc.execute_command("FUNCTION LIST", target_nodes=node)
        assert "livecore_v1" in str(libs), node.name
    # A node restarted without persistence has no library: the next call reloads it.
    for node in primaries:
        await rc.execute_command("FUNCTION FLUSH", target_nodes=node)
    shows = [f"s{uuid.uuid4().hex[:8]}" for _ in range(40)]
    assert {shard_of(rc, cluster_services.keys.show(s, "seq")) for s in shows} \
        == {n.name for n in primaries}, "40 random shows should cover every shard"
    seq, frame = await cluster_services.bus.publish(shows[0], "announcement", {"text": "hi"})
    assert seq == 1 and '"seq":1' in frame
    # call_many (one pipeline, keys on several shards) after another flush.
    for node in primaries:
        await rc.execute_command("FUNCTION FLUSH", target_nodes=node)
    calls = [("lc_publish", [cluster_services.keys.show(s, "seq"), cluster_services.keys.show(s, "events")],
              ['{"type":"announcement"', 100, 0]) for s in shows]
    results = await cluster_services.fns.call_many(calls)
    assert [int(r[0]) for r in results] == [2] + [1] * 39


async def test_no_command_getkeys_round_trips(cluster_services: Services,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    rc = cluster_of(cluster_services)
    asked: list[tuple[Any, ...]] = []
    original = rc.commands_parser._get_moveable_keys

    async def spy(*args: Any) -> Any:
        asked.append(args)
        return await original(*args)

    monkeypatch.setattr(rc.commands_parser, "_get_moveable_keys", spy)
    show = f"s{uuid.uuid4().hex[:8]}"
    await cluster_services.bus.publish(show, "announcement", {"text": "x"})
    ev, staff, vol = cluster_services.bus.stream_keys(show)
    resp: Any = await rc.xread({ev: "0-0", staff: "0-0", vol: "0-0"}, count=10, block=10)
    assert resp and resp[0][0] == ev
    await cluster_services.fns.call_many(
        [("lc_publish", [cluster_services.keys.show(f"{show}{i}", "seq"),
                         cluster_services.keys.show(f"{show}{i}", "events")], ['{"type":"x"', 10, 0])
         for i in range(5)])
    assert asked == []


# ---- two gateway processes on the cluster ----------------------------------------


@pytest.fixture(scope="module")
def cluster_nodes(valkey_cluster: LocalCluster, backends: Backends) -> Iterator[tuple[ServerProc, ServerProc]]:
    prefix = f"lcn{uuid.uuid4().hex[:6]}"
    procs: list[ServerProc] = []
    try:
        for name in ("cla", "clb"):
            env = server_env(valkey_cluster.url, backends.database_url, prefix, LIVECORE_NODE_ID=name,
                             LIVECORE_VIEWERS_INTERVAL_S="0.3")
            try:
                procs.append(ServerProc(free_port(), env).start())
            except RuntimeError as exc:
                pytest.fail(f"`livecore serve` did not start on LIVECORE_REDIS_URL={valkey_cluster.url}. "
                            f"Every Redis client must come from livecore.services.redis_client "
                            f"(livecore/cli.py _check_backends included).\n{exc}")
        yield procs[0], procs[1]
    finally:
        for proc in procs:
            proc.stop()


async def test_flash_deals_on_several_shards(cluster_nodes: tuple[ServerProc, ServerProc],
                                             valkey_cluster: LocalCluster) -> None:
    a, b = cluster_nodes
    quantity, buyers = 15, 60
    async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as http_a, \
            httpx.AsyncClient(base_url=b.base_url, timeout=30) as http_b:
        rc = redis_client(valkey_cluster.url)
        assert isinstance(rc, LiveCoreCluster)
        await rc.initialize()
        prefix = dict(a.env)["LIVECORE_REDIS_PREFIX"]
        deals: list[tuple[str, str]] = []
        shards: set[str] = set()
        try:
            # Launch deals until they sit on at least two shards (ids are random).
            while len(deals) < 3 or (len(shards) < 2 and len(deals) < 10):
                show_id, product_id = await create_show(http_a, stock=quantity)
                resp = await http_a.post(f"/api/v1/shows/{show_id}/deals", headers=AUTH, json={
                    "product_id": product_id, "price_cents": 500, "quantity": quantity,
                    "duration_s": 300, "per_user_limit": 1})
                assert resp.status_code == 201, resp.text
                deal_id = resp.json()["id"]
                deals.append((show_id, deal_id))
                shards.add(shard_of(rc, f"{prefix}:{{deal:{deal_id}}}:state"))
            assert len(shards) >= 2

            async def claim(i: int, show_id: str, deal_id: str) -> tuple[str, int]:
                http = http_a if i % 2 else http_b
                token = mint("viewer", show_id, f"buyer-{i}")
                r = await http.post(f"/api/v1/shows/{show_id}/deals/{deal_id}/claims",
                                    headers={"authorization": f"Bearer {token}"}, json={})
                return deal_id, r.status_code

            results = await asyncio.gather(*(claim(i, s, d) for i in range(buyers) for s, d in deals))
            for show_id, deal_id in deals:
                codes = Counter(code for d, code in results if d == deal_id)
                assert codes == {201: quantity, 409: buyers - quantity}, (deal_id, codes)
                state = await rc.hgetall(f"{prefix}:{{deal:{deal_id}}}:state")  # type: ignore[misc]
                assert state["remaining"] == "0"
                resp = await http_b.get(f"/api/v1/shows/{show_id}/deals/{deal_id}", headers=AUTH)
                assert resp.status_code == 200 and resp.json()["remaining"] == 0, resp.text
        finally:
            await rc.aclose()


async def test_show_across_two_nodes(cluster_nodes: tuple[ServerProc, ServerProc],
                                     valkey_cluster: LocalCluster) -> None:
    a, b = cluster_nodes
    async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as http:
        show_id, _ = await create_show(http)
        other_show, _ = await create_show(http)
    viewers = [await WS.open(a.ws_url("viewer", show_id), mint("viewer", show_id, f"va{i}")) for i in range(3)]
    viewer_b = await WS.open(b.ws_url("viewer", show_id), mint("viewer", show_id, "vb"))
    host = await WS.open(b.ws_url("host", show_id), mint("host", show_id, "host-1"))
    # A second show on node A: its presence shares node A's pipeline (two slots).
    other = await WS.open(a.ws_url("viewer", other_show), mint("viewer", other_show, "vo"))
    try:
        # Viewer counts are summed over both nodes' presence entries.
        seen = await viewers[0].wait_for(lambda f: f.get("type") == "viewers" and f["count"] == 4)
        assert seen["count"] == 4
        prefix = dict(a.env)["LIVECORE_REDIS_PREFIX"]
        rc = redis_client(valkey_cluster.url)
        try:
            presence: Any = await rc.hgetall(f"{prefix}:{{show:{other_show}}}:presence")  # type: ignore[misc]
        finally:
            await rc.aclose()
        assert presence["cla"].split(":")[0] == "1", presence
        assert {v.welcome["node"] for v in viewers} == {"cla"} and host.welcome["node"] == "clb"
        ack = await host.request("announce", text="hello from node B")
        assert ack["type"] == "ack", ack
        for v in [*viewers, viewer_b]:
            frame = await v.wait_for("announcement")
            assert frame["text"] == "hello from node B"
        # And back: a viewer's chat on node A reaches the host on node B.
        ack = await viewers[0].request("chat.send", text="hi from node A")
        assert ack["type"] == "ack", ack
        chat = await host.wait_for(lambda f: f.get("type") == "chat.message")
        assert chat["message"]["text"] == "hi from node A"
        assert chat["seq"] > frame["seq"]
    finally:
        for c in [*viewers, viewer_b, host, other]:
            await c.close()
