"""Contract details of PROTOCOL.md §2 and §4–5 that an outside client relies on."""

from __future__ import annotations

import httpx
import jwt

from tests.support import SECRET, WS, ServerProc, create_show, mint


async def test_token_without_exp_is_accepted_but_an_expired_one_is_not(
        http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    # §2 names sub, name, role and show; a client may sign its own token without exp.
    token = jwt.encode({"sub": "u-noexp", "name": "No Exp", "role": "viewer", "show": show_id},
                       SECRET, algorithm="HS256")
    viewer = await WS.open(server.ws_url("viewer", show_id), token)
    assert viewer.welcome["type"] == "welcome" and viewer.welcome["user"]["id"] == "u-noexp"
    assert (await viewer.request("chat.send", text="hi"))["type"] == "ack"
    await viewer.close()
    r = await http.get(f"/api/v1/shows/{show_id}", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200
    expired = jwt.encode({"sub": "u", "name": "u", "role": "viewer", "show": show_id, "exp": 1},
                         SECRET, algorithm="HS256")
    r = await http.post(f"/api/v1/shows/{show_id}/deals/d_x/claims",
                        headers={"authorization": f"Bearer {expired}"}, json={})
    assert r.status_code == 401


async def test_socket_codes_for_launch_and_claim(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, product_id = await create_show(http)
    host = await WS.open(server.ws_url("host", show_id), mint("host", show_id))
    # wrong field types / missing fields on the socket: bad_request, connection kept
    for fields in ({"product_id": product_id, "price_cents": 100, "quantity": "10", "duration_s": 60},
                   {"product_id": product_id, "price_cents": 100, "quantity": 10}):
        reply = await host.request("deal.launch", **fields)
        assert reply["type"] == "error" and reply["code"] == "bad_request", reply
    viewer = await WS.open(server.ws_url("viewer", show_id), mint("viewer", show_id))
    # a deal this show does not have: one of the claim codes of §5
    reply = await viewer.request("deal.claim", deal_id="d_doesnotexist")
    assert reply["type"] == "error" and reply["code"] == "deal_not_live", reply
    # the heart with or without the emoji variation selector
    for heart in ("\u2764", "\u2764\ufe0f"):
        await viewer.send({"type": "react", "emoji": heart})
    await viewer.send({"type": "react", "emoji": "\u2764\u2764"})
    bad = await viewer.wait_for(lambda f: f.get("type") == "error")
    assert bad["code"] == "bad_request"
    total: dict[str, int] = {}
    while sum(total.values()) < 2:  # the two may straddle two aggregation windows
        frame = await host.wait_for(lambda f: f.get("type") == "reactions", timeout=15)
        for emoji, n in frame["counts"].items():
            total[emoji] = total.get(emoji, 0) + n
    assert total == {"\u2764\ufe0f": 2}
    assert (await viewer.request("ping"))["type"] == "pong"
    for ws in (host, viewer):
        await ws.close()


async def test_resume_from_the_future_is_not_recovered(http: httpx.AsyncClient, server: ServerProc) -> None:
    show_id, _ = await create_show(http)
    fresh = await WS.open(server.ws_url("viewer", show_id), None, resume_from=0)
    assert fresh.welcome["seq"] == 0 and fresh.welcome["recovered"] is True
    ahead = await WS.open(server.ws_url("viewer", show_id), None, resume_from=50)
    assert ahead.welcome["recovered"] is False
    for ws in (fresh, ahead):
        await ws.close()
