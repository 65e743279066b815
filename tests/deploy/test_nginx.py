"""Real nginx, running deploy/nginx.conf, in front of two `livecore serve`
processes (the session's `server` and `server_b`, which share Redis and
PostgreSQL): viewers spread over both nodes see one show, and a show's
WHIP/WHEP requests always reach the same node."""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from livecore.embedded import _wait_port, free_port
from tests.support import ROOT, WS, ServerProc, create_show, mint

NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def render_nginx_conf(upstreams: tuple[int, int], listen: int, workdir: Path) -> str:
    """deploy/nginx.conf with loopback ports and paths under `workdir`. Each
    replaced string must occur exactly as often as the deployment file has it,
    so the test keeps running the real file rather than a drifting copy."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    temp = "".join(f"    {kind}_temp_path {workdir}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    replacements = [
        ("server gateway-1:8000", f"server 127.0.0.1:{upstreams[0]}", 2),
        ("server gateway-2:8000", f"server 127.0.0.1:{upstreams[1]}", 2),
        ("listen 80;", f"listen 127.0.0.1:{listen};", 1),
        ("pid /var/run/nginx.pid;", f"pid {workdir}/nginx.pid;", 1),
        ("/var/log/nginx/error.log", f"{workdir}/error.log", 1),
        ("/var/log/nginx/access.log", f"{workdir}/access.log", 1),
        ("http {\n", "http {\n" + temp, 1),
    ]
    for old, new, count in replacements:
        found = text.count(old)
        assert found == count, f"deploy/nginx.conf: expected {count} x {old!r}, found {found}"
        text = text.replace(old, new)
    return text


@dataclass
class Proxy:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, role: str, show: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{role}/{show}"

    def access_log(self) -> list[str]:
        path = self.workdir / "access.log"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def proxy(nginx_binary: str, server: ServerProc, server_b: ServerProc,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("nginx")
    workdir.chmod(0o755)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(render_nginx_conf((server.port, server_b.port), port, workdir), encoding="utf-8")
    base = [nginx_binary, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "early-error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"nginx -t rejected deploy/nginx.conf:\n{check.stderr}"
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port("127.0.0.1", port, proc, 10, "nginx")
        yield Proxy(port, workdir, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_viewers_through_the_proxy_see_one_show(proxy: Proxy, server: ServerProc,
                                                      server_b: ServerProc) -> None:
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as http:
        show_id, _ = await create_show(http)
        nodes = {(await http.get("/readyz")).json()["node"] for _ in range(6)}
        assert len(nodes) == 2, f"HTTP through nginx reached only {nodes}"
        assert (await http.get("/nginx-health")).status_code == 200
        assert (await http.get("/metrics")).status_code == 404

    host = await WS.open(proxy.ws_url("host", show_id), mint("host", show_id, "host-1"))
    viewers = [await WS.open(proxy.ws_url("viewer", show_id), mint("viewer", show_id, f"pv{i}"))
               for i in range(8)]
    try:
        by_node: dict[str, list[WS]] = defaultdict(list)
        for v in viewers:
            by_node[v.welcome["node"]].append(v)
        assert set(by_node) == nodes, f"viewers landed on {sorted(by_node)}, nodes are {sorted(nodes)}"

        ack = await host.request("announce", text="one show, two nodes")
        assert ack["type"] == "ack", ack
        frames = await asyncio.gather(*(v.wait_for("announcement") for v in viewers))
        assert {f["text"] for f in frames} == {"one show, two nodes"}
        assert len({f["seq"] for f in frames}) == 1

        # Chat from a viewer on one node reaches viewers on the other.
        node_a, node_b = sorted(by_node)
        ack = await by_node[node_a][0].request("chat.send", text="hello across the proxy")
        assert ack["type"] == "ack", ack
        chat = await by_node[node_b][0].wait_for(lambda f: f.get("type") == "chat.message")
        assert chat["message"]["text"] == "hello across the proxy"

        # The viewer count is the show's, not the node's. (The first viewer was
        # live before the count reached its final value, so it gets that frame.)
        counted = await viewers[0].wait_for(
            lambda f: f.get("type") == "viewers" and f["count"] == len(viewers), timeout=15)
        assert counted["count"] == len(viewers)
    finally:
        for c in [host, *viewers]:
            await c.close()


async def test_video_requests_of_a_show_reach_one_node(proxy: Proxy) -> None:
    shows = [f"show-{secrets.token_hex(4)}" for _ in range(16)]
    sdp = {"content-type": "application/sdp"}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as http:
        for show in shows:
            for method, path in (("POST", f"/whip/{show}"), ("POST", f"/whep/{show}"),
                                 ("DELETE", f"/whep/{show}/{secrets.token_hex(8)}"),
                                 ("POST", f"/whep/{show}")):
                resp = await http.request(method, path, headers=sdp, content=b"v=0\r\n")
                assert resp.status_code < 500, (path, resp.status_code, resp.text)
    # nginx logs a request once it has answered: wait for all 64 lines.
    pattern = re.compile(r"upstream=(\S+) .*show=(\S+)$")
    upstreams: dict[str, set[str]] = defaultdict(set)
    deadline = time.monotonic() + 5
    while True:
        upstreams.clear()
        for line in proxy.access_log():
            m = pattern.search(line)
            if m and m.group(2) in shows:
                upstreams[m.group(2)].add(m.group(1))
        if sum(1 for line in proxy.access_log() if "show=show-" in line) >= 4 * len(shows) \
                or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert set(upstreams) == set(shows)
    for show, addrs in upstreams.items():
        assert len(addrs) == 1, f"{show}: WHIP/WHEP requests went to {addrs}"
    used = set().union(*upstreams.values())
    assert len(used) == 2, f"16 shows all hashed to {used}: the hash is not on the show id"
