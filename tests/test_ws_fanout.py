"""Fanout: ordering, resume, multi-node, slow consumers — real sockets, real servers."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

import httpx

from tests.support import ADMIN, WS, ServerProc, create_show, mint

STORED = {"chat.message", "product.pinned", "deal.started", "announcement", "show.status",
          "chat.deleted", "deal.ended", "product.unpinned", "chat.pinned", "chat.unpinned"}


def stalled_socket(port: int, path: str) -> socket.socket:
    """Open a WebSocket by hand, say hello, then never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1024)
    assert b" 101 " in response
    payload = b'{"type":"hello","token":null,"resume_from":null,"batch":false}'
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


async def collect_stored(ws: WS, until: Any, timeout: float = 30) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        frame = await ws.recv(timeout)
        if frame.get("type") in STORED:
            out.append(frame)
            if until(frame):
                return out


async def test_order_and_gap_free_seq_to_200_viewers(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, product_id = await create_show(http)
    host = await WS.open(server.ws_url("host", show_id), mint("host", show_id, "h1"))
    viewers = await asyncio.gather(*[
        WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id), batch=(i % 2 == 0))
        for i in range(200)])
    assert (await host.request("product.pin", product_id=product_id))["type"] == "ack"
    launched = await host.request("deal.launch", product_id=product_id, price_cents=500, quantity=5,
                                  duration_s=60)
    assert launched["type"] == "ack", launched
    for i in range(100):
        await host.send({"type": "chat.send", "id": f"c{i}", "text": f"msg {i}"})
    results = await asyncio.gather(*[
        collect_stored(v, lambda f: f.get("type") == "chat.message" and f["message"]["text"] == "msg 99")
        for v in viewers])
    reference = [(f["type"], f["seq"]) for f in results[0]]
    assert reference[0][0] == "product.pinned" and reference[1][0] == "deal.started"
    assert [t for t, _ in reference].count("chat.message") == 100
    seqs = [s for _, s in reference]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must be gap-free and increasing"
    for got in results[1:]:
        assert [(f["type"], f["seq"]) for f in got] == reference
    texts = [f["message"]["text"] for f in results[0] if f["type"] == "chat.message"]
    assert texts == [f"msg {i}" for i in range(100)]
    await asyncio.gather(*[v.close() for v in viewers])
    await host.close()


async def test_resume_replays_missed_events(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    host = await WS.open(server.ws_url("host", show_id), mint("host", show_id))
    viewer = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id))
    await host.request("announce", text="first")
    first = await viewer.wait_for("announcement")
    await viewer.close()
    for i in range(5):
        await host.request("announce", text=f"missed {i}")
    back = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id),
                         resume_from=first["seq"])
    assert back.welcome["recovered"] is True
    replayed = [await back.wait_for("announcement") for _ in range(5)]
    assert [f["text"] for f in replayed] == [f"missed {i}" for i in range(5)]
    assert [f["seq"] for f in replayed] == list(range(first["seq"] + 1, first["seq"] + 6))
    assert back.welcome["seq"] == replayed[-1]["seq"]
    await host.request("announce", text="live again")
    assert (await back.wait_for("announcement"))["text"] == "live again"
    await back.close()
    await host.close()


async def test_resume_too_far_back_is_not_recovered(http: httpx.AsyncClient, backends: Any,
                                                    prefix: str) -> None:
    from livecore.embedded import free_port
    from tests.support import server_env

    node = ServerProc(free_port(), server_env(backends.redis_url, backends.database_url, prefix,
                                              LIVECORE_HISTORY_MAX="5",
                                              LIVECORE_FRAME_RATE_PER_S="1000")).start()
    try:
        async with httpx.AsyncClient(base_url=node.base_url) as client:
            show_id, _ = await create_show(client)
        host = await WS.open(node.ws_url("host", show_id), mint("host", show_id))
        for i in range(300):
            await host.request("announce", text=f"a{i}")
        viewer = await WS.open(node.ws_url("viewer", show_id), mint("viewer", show_id), resume_from=1)
        assert viewer.welcome["recovered"] is False
        assert viewer.welcome["seq"] >= 300
        await viewer.close()
        await host.close()
    finally:
        node.stop()


async def test_two_nodes_form_one_cluster(http: httpx.AsyncClient, server: ServerProc,
                                          server_b: ServerProc) -> None:
    show_id, product_id = await create_show(http, stock=50)
    host_b = await WS.open(server_b.ws_url("host", show_id), mint("host", show_id))
    viewers_a = [await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id, f"va{i}"))
                 for i in range(3)]
    viewers_b = [await WS.open(server_b.ws_url("viewer", show_id), mint("viewer", show_id, f"vb{i}"))
                 for i in range(2)]
    await host_b.request("announce", text="hello both nodes")
    for v in viewers_a:
        assert (await v.wait_for("announcement"))["text"] == "hello both nodes"
    # viewers are counted across both nodes
    counts = await viewers_a[0].wait_for(lambda f: f.get("type") == "viewers" and f["count"] == 5, timeout=15)
    assert counts["count"] == 5
    # a deal launched on A is claimable on B, quantity respected across nodes
    host_a = await WS.open(server.ws_url("host", show_id), mint("host", show_id))
    ack = await host_a.request("deal.launch", product_id=product_id, price_cents=100, quantity=3,
                               duration_s=60, per_user_limit=1)
    deal_id = ack["deal"]["id"]
    for v in viewers_b:
        await v.wait_for("deal.started")
    outcomes = []
    for v in viewers_a + viewers_b:
        r = await v.request("deal.claim", deal_id=deal_id, qty=1)
        outcomes.append(r["type"] if r["type"] == "ack" else r["code"])
    assert outcomes.count("ack") == 3 and outcomes.count("sold_out") == 2
    for ws in [*viewers_a, *viewers_b, host_a, host_b]:
        await ws.close()


async def test_deal_tick_and_ended(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, product_id = await create_show(http)
    host = await WS.open(server.ws_url("host", show_id), mint("host", show_id))
    viewer = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id))
    ack = await host.request("deal.launch", product_id=product_id, price_cents=100, quantity=2, duration_s=2)
    deal = ack["deal"]
    started = await viewer.wait_for("deal.started")
    assert started["deal"]["id"] == deal["id"] and started["deal"]["remaining"] == 2
    tick = await viewer.wait_for("deal.tick")
    assert tick["deal_id"] == deal["id"] and tick["ends_at"] == deal["ends_at"] and "seq" not in tick
    assert isinstance(tick["server_time"], int) and tick["ts"] == tick["server_time"]
    ended = await viewer.wait_for("deal.ended", timeout=15)
    assert ended["deal_id"] == deal["id"] and ended["reason"] == "expired" and ended["sold"] == 0
    await viewer.close()
    await host.close()


async def test_ticks_ride_along_with_events_and_keep_coming_every_second(http: httpx.AsyncClient,
                                                                        server: ServerProc) -> None:
    show_id, product_id = await create_show(http)
    host = await WS.open(server.ws_url("host", show_id), mint("host", show_id))
    ack = await host.request("deal.launch", product_id=product_id, price_cents=100, quantity=5, duration_s=600)
    deal_id = ack["deal"]["id"]
    viewer = await WS.open(server.ws_url("viewer", show_id), None)
    plain = await WS.open(server.ws_url("viewer", show_id), None, batch=False)
    # Chat every ~0.2 s for 4 s: a tick due soon goes out in the same write as a message.
    for i in range(20):
        assert (await host.request("chat.send", text=f"tick test {i}"))["type"] == "ack"
        await asyncio.sleep(0.2)
    await host.request("announce", text="done")
    for ws in (viewer, plain):
        await ws.wait_for(lambda f: f.get("type") == "announcement" and f["text"] == "done", timeout=20)
    batches = [f for f in viewer.raw if f.get("type") == "batch"]
    rode_along = [b for b in batches
                  if {e["type"] for e in b["events"]} >= {"chat.message", "deal.tick"}]
    assert rode_along, "no tick went out together with a chat message"
    for ws in (viewer, plain):
        ticks = [f for f in ws.seen if f.get("type") == "deal.tick"]
        assert all(t["deal_id"] == deal_id for t in ticks)
        # 4+ s of chat: at least one tick a second (the contract), counted, not timed.
        assert len(ticks) >= 3
        chat = [f["message"]["text"] for f in ws.seen if f.get("type") == "chat.message"]
        assert chat == [f"tick test {i}" for i in range(20)]
    assert not any(f.get("type") == "batch" for f in plain.raw)  # batch:false is honoured
    for ws in (viewer, plain, host):
        await ws.close()


async def test_stalled_client_does_not_hold_back_others(http: httpx.AsyncClient, backends: Any,
                                                        prefix: str) -> None:
    from livecore.embedded import free_port
    from tests.support import server_env

    node = ServerProc(free_port(), server_env(backends.redis_url, backends.database_url, prefix,
                                              LIVECORE_SEND_QUEUE_MAX="64", LIVECORE_WS_PING_INTERVAL_S="0",
                                              LIVECORE_FRAME_RATE_PER_S="1000")).start()
    try:
        async with httpx.AsyncClient(base_url=node.base_url) as client:
            show_id, _ = await create_show(client)
            # Big frames (a 2 KB image URL) so the stalled socket's kernel buffers fill quickly.
            big = await client.post("/api/v1/products", headers={"authorization": f"Bearer {ADMIN}"}, json={
                "sku": f"BIG-{show_id}", "name": "Big", "price_cents": 1, "currency": "USD",
                "image_url": "https://cdn.test/" + "x" * 2000, "stock": 1})
            product_id = big.json()["id"]
        host = await WS.open(node.ws_url("host", show_id), mint("host", show_id))
        # The stalled client: a raw socket with a tiny receive buffer that never reads.
        stalled = stalled_socket(node.port, f"/ws/viewer/{show_id}")
        # Healthy viewers read all the time (as a real player does) while the host pins.
        others = await asyncio.gather(*[WS.open(node.ws_url("viewer", show_id), None) for _ in range(50)])
        finished = [asyncio.create_task(v.wait_for(
            lambda f: f.get("type") == "announcement" and f["text"] == "the end", timeout=120))
            for v in others]
        for _ in range(2500):
            assert (await host.request("product.pin", product_id=product_id))["type"] == "ack"
        await host.request("announce", text="the end")
        for last in await asyncio.gather(*finished):
            assert last["text"] == "the end"
        # the stalled one is eventually closed (1013), without having held anyone back
        # ... and was closed for overflowing its queue, while nobody else was.
        metrics = httpx.get(node.base_url + "/metrics").text
        closed = [ln for ln in metrics.splitlines() if ln.startswith("livecore_slow_clients_closed_total")]
        assert closed and float(closed[0].split()[-1]) >= 1
        stalled.close()
        await asyncio.gather(*[v.close() for v in others])
        await host.close()
    finally:
        node.stop()


async def test_host_stats_count_chat_reactions_claims_and_orders(http: httpx.AsyncClient,
                                                                 server: ServerProc) -> None:
    show_id, product_id = await create_show(http, stock=50)
    host = await WS.open(server.ws_url("host", show_id), mint("host", show_id))
    deal = (await host.request("deal.launch", product_id=product_id, price_cents=700, quantity=20,
                               duration_s=600, per_user_limit=5))["deal"]
    buyers = [await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id, f"s{i}"))
              for i in range(3)]
    # A burst of claims from several sockets at once: counted whatever their order.
    async def claim_twice(b: WS) -> list[dict[str, Any]]:
        return [await b.request("deal.claim", deal_id=deal["id"], qty=1) for _ in range(2)]

    replies = [r for rs in await asyncio.gather(*[claim_twice(b) for b in buyers]) for r in rs]
    assert [r["type"] for r in replies] == ["ack"] * 6, replies
    for b in buyers:
        assert (await b.request("chat.send", text="hello"))["type"] == "ack"
    await buyers[0].send({"type": "react", "emoji": "🔥"})
    reservation = replies[0]["reservation"]
    paid = await http.post(f"/api/v1/reservations/{reservation['id']}/confirm",
                           headers={"authorization": f"Bearer {mint('viewer', show_id, 's0')}"},
                           json={"payment_ref": "p1"})
    assert paid.status_code == 201, paid.text
    stats = await host.wait_for(lambda f: f.get("type") == "stats" and f.get("claims") == 6
                                and f.get("chat_per_min") == 3 and f.get("reactions_per_min") == 1
                                and f.get("orders") == 1 and f.get("viewers") == 3, timeout=20)
    assert stats["gmv_cents"] == 700 and stats["peak_viewers"] >= 3 and stats["ts"] > 0
    for ws in (host, *buyers):
        await ws.close()


async def test_messages_sent_just_before_a_disconnect_are_not_lost(http: httpx.AsyncClient,
                                                                   server: ServerProc) -> None:
    """A client that sends and hangs up at once (a tab closed right after "send"):
    every frame it got onto the wire before its close is still handled, in order."""
    show_id, _ = await create_show(http)
    watcher = await WS.open(server.ws_url("viewer", show_id), None)
    for round_ in range(3):
        sender = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id, f"quick{round_}"))
        texts = [f"bye {round_}-{i}" for i in range(5)]  # the chat burst is 5
        # Commands run one at a time per socket, so 2–5 wait in the backlog when the close lands.
        for text in texts:
            await sender.send({"type": "chat.send", "id": text, "text": text})
        await sender.close()
        got = [(await watcher.wait_for("chat.message", timeout=15))["message"]["text"] for _ in texts]
        assert got == texts
    await watcher.close()
