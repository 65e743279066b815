"""Moderation over real sockets, cluster-wide across two server processes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from livecore.services import Services
from tests.support import ADMIN, WS, ServerProc, create_show, mint


async def open_all(server: ServerProc, server_b: ServerProc, show_id: str) -> tuple[WS, WS, WS, WS]:
    mod = await WS.open(server.ws_url("moderator", show_id), mint("moderator", show_id, "mod1", "Mo"))
    host = await WS.open(server.ws_url("host", show_id), mint("host", show_id, "host1", "Ho"))
    viewer_b = await WS.open(server_b.ws_url("viewer", show_id), mint("viewer", show_id, "vic", "Vic"))
    watcher = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id, "wat", "Wat"))
    return mod, host, viewer_b, watcher


async def test_ban_timeout_slow_mode_are_cluster_wide(http: httpx.AsyncClient, server: ServerProc,
                                                      server_b: ServerProc, services: Services) -> None:
    show_id, _ = await create_show(http)
    mod, host, viewer, watcher = await open_all(server, server_b, show_id)
    assert (await viewer.request("chat.send", text="hello"))["type"] == "ack"
    # ban on node A → refused on node B for the very next message
    assert (await mod.request("user.ban", user_id="vic"))["type"] == "ack"
    refused = await viewer.request("chat.send", text="still here?")
    assert refused["type"] == "error" and refused["code"] == "banned"
    notice = [f for f in viewer.seen if f.get("type") == "mod.notice"]
    assert notice and notice[0]["action"] == "ban"
    assert (await mod.request("user.unban", user_id="vic"))["type"] == "ack"
    assert (await viewer.request("chat.send", text="back"))["type"] == "ack"
    # timeout: muted with until, then lifts by itself
    ack = await mod.request("user.timeout", user_id="vic", seconds=1)
    until = ack["until"]
    muted = await viewer.request("chat.send", text="x")
    assert muted["code"] == "muted" and muted["until"] == until
    await asyncio.sleep(max(0, (until - muted.get("until", until)) / 1000) + 1.2)
    assert (await viewer.request("chat.send", text="free again"))["type"] == "ack"
    # slow mode (after letting the per-user rate-limit bucket refill)
    await asyncio.sleep(2.5)
    assert (await mod.request("chat.slow_mode", seconds=30))["type"] == "ack"
    assert (await viewer.request("chat.send", text="one"))["type"] == "ack"
    slow = await viewer.request("chat.send", text="two")
    assert slow["code"] == "slow_mode" and 0 < slow["retry_after_ms"] <= 30_000
    assert (await mod.request("chat.slow_mode", seconds=0))["type"] == "ack"
    # every action is in the durable audit trail, and broadcast to staff only
    rows = await services.pool.fetch(
        "SELECT action, target, actor_id, actor_role FROM moderation_actions WHERE show_id=$1 ORDER BY id",
        show_id)
    assert [r["action"] for r in rows] == ["user.ban", "user.unban", "user.timeout", "chat.slow_mode",
                                           "chat.slow_mode"]
    assert all(r["actor_id"] == "mod1" and r["actor_role"] == "moderator" for r in rows)
    action = await host.wait_for("mod.action")
    assert action["action"]["action"] == "user.ban"
    log = await http.get(f"/api/v1/shows/{show_id}/moderation",
                         headers={"authorization": f"Bearer {mint('host', show_id)}"})
    assert log.status_code == 200 and len(log.json()["actions"]) == 5
    denied = await http.get(f"/api/v1/shows/{show_id}/moderation",
                            headers={"authorization": f"Bearer {mint('viewer', show_id)}"})
    assert denied.status_code == 403
    # viewers never see staff events
    await watcher.request("ping")
    assert not any(e.get("type") in ("mod.action", "chat.flagged") for e in watcher.seen)
    for ws in (mod, host, viewer, watcher):
        await ws.close()


async def test_ban_blocks_claims(http: httpx.AsyncClient, server: ServerProc, server_b: ServerProc) -> None:
    show_id, product_id = await create_show(http)
    mod, host, viewer, watcher = await open_all(server, server_b, show_id)
    deal = (await host.request("deal.launch", product_id=product_id, price_cents=10, quantity=5,
                               duration_s=60))["deal"]
    await mod.request("user.ban", user_id="vic")
    refused = await viewer.request("deal.claim", deal_id=deal["id"])
    assert refused["code"] == "banned"
    over_http = await http.post(f"/api/v1/shows/{show_id}/deals/{deal['id']}/claims",
                                headers={"authorization": f"Bearer {mint('viewer', show_id, 'vic')}"})
    assert over_http.status_code == 403
    assert (await watcher.request("deal.claim", deal_id=deal["id"]))["type"] == "ack"
    for ws in (mod, host, viewer, watcher):
        await ws.close()


async def test_filter_review_queue(http: httpx.AsyncClient, server: ServerProc, server_b: ServerProc) -> None:
    show_id, _ = await create_show(http)
    mod, host, viewer, watcher = await open_all(server, server_b, show_id)
    assert (await mod.request("chat.filter", words=["knockoff", "مزيف"]))["type"] == "ack"
    held = await viewer.request("chat.send", text="this is a K N O C K O F F")
    assert held["type"] == "ack" and held["held"] is True
    flagged = await mod.wait_for("chat.flagged")
    assert flagged["message"]["id"] == held["message_id"] and flagged["reason"] == "word:knockoff"
    held_ar = await viewer.request("chat.send", text="منتج مُزَيَّف")
    assert held_ar.get("held") is True
    flagged_ar = await mod.wait_for("chat.flagged")
    # approve one, reject the other
    assert (await mod.request("chat.approve", message_id=flagged["message"]["id"]))["type"] == "ack"
    shown = await watcher.wait_for("chat.message")
    assert shown["message"]["id"] == flagged["message"]["id"]
    assert (await mod.request("chat.reject", message_id=flagged_ar["message"]["id"]))["type"] == "ack"
    again = await mod.request("chat.reject", message_id=flagged_ar["message"]["id"])
    assert again["type"] == "error" and again["code"] == "not_found"
    await watcher.request("ping")
    assert not any(e.get("type") == "chat.flagged" for e in watcher.seen)
    assert not any(e.get("type") == "chat.message" and e["message"]["id"] == flagged_ar["message"]["id"]
                   for e in watcher.seen)
    # links are held by policy
    link = await viewer.request("chat.send", text="cheaper at https://elsewhere.example")
    assert link.get("held") is True
    for ws in (mod, host, viewer, watcher):
        await ws.close()


async def test_delete_pin_and_resume_never_shows_deleted(http: httpx.AsyncClient, server: ServerProc,
                                                         server_b: ServerProc) -> None:
    show_id, _ = await create_show(http)
    mod, host, viewer, watcher = await open_all(server, server_b, show_id)
    first = await watcher.request("ping")
    assert first["type"] == "pong"
    start_seq = watcher.welcome["seq"]
    await watcher.close()
    keep = await viewer.request("chat.send", text="keep me")
    gone = await viewer.request("chat.send", text="delete me")
    await mod.wait_for(lambda f: f.get("type") == "chat.message" and f["message"]["id"] == gone["message_id"])
    assert (await mod.request("chat.pin", message_id=keep["message_id"]))["type"] == "ack"
    assert (await mod.request("chat.delete", message_id=gone["message_id"]))["type"] == "ack"
    back = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id), resume_from=start_seq)
    assert back.welcome["recovered"] is True
    assert back.welcome["pinned_message"]["id"] == keep["message_id"]
    events: list[dict[str, Any]] = []
    while not events or events[-1].get("seq") != back.welcome["seq"]:
        events.append(await back.recv())
    ids = [e["message"]["id"] for e in events if e.get("type") == "chat.message"]
    assert keep["message_id"] in ids and gone["message_id"] not in ids
    # The replay stays gap-free: the deleted message's seq carries a chat.deleted.
    seqs = [e["seq"] for e in events if "seq" in e]
    assert seqs == list(range(start_seq + 1, back.welcome["seq"] + 1))
    tombstone = next(e for e in events if e.get("type") == "chat.deleted")
    assert tombstone["message_id"] == gone["message_id"] and "text" not in tombstone
    assert any(e.get("type") == "chat.pinned" for e in events)
    # refusal paths: viewer and host cannot moderate
    assert (await viewer.request("chat.delete", message_id=keep["message_id"]))["code"] == "forbidden"
    assert (await host.request("user.ban", user_id="vic"))["code"] == "forbidden"
    assert (await mod.request("chat.pin", message_id="m_nope"))["code"] == "not_found"
    assert (await mod.request("user.timeout", user_id="vic", seconds=-1))["code"] == "bad_request"
    for ws in (mod, host, viewer, back):
        await ws.close()


async def test_price_question_gets_auto_reply(http: httpx.AsyncClient, server: ServerProc,
                                              server_b: ServerProc) -> None:
    show_id, product_id = await create_show(http, price=4999, currency="USD")
    mod, host, viewer, watcher = await open_all(server, server_b, show_id)
    await host.request("product.pin", product_id=product_id)
    await viewer.request("chat.send", text="كم السعر؟")
    reply = await watcher.wait_for(lambda f: f.get("type") == "chat.message"
                                   and f["message"]["user"]["id"] == "bot")
    assert "49.99 USD" in reply["message"]["text"]
    # FAQ rules set by the host over HTTP
    faq = await http.post(f"/api/v1/shows/{show_id}/faq", headers={"authorization": f"Bearer {ADMIN}"},
                          json={"patterns": ["shipping"], "answer": "Free shipping over 50 USD"})
    assert faq.status_code == 201
    await asyncio.sleep(3.1)  # the bot answers at most once per 3 s per show
    await watcher.request("ping")
    await viewer.request("chat.send", text="what about shipping?")
    faq_reply = await watcher.wait_for(lambda f: f.get("type") == "chat.message"
                                       and f["message"]["user"]["id"] == "bot"
                                       and "shipping" in f["message"]["text"])
    assert faq_reply["message"]["text"] == "Free shipping over 50 USD"
    for ws in (mod, host, viewer, watcher):
        await ws.close()
