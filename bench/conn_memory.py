"""Where an idle viewer's memory goes: Python heap per connection, by source line.

    python -m bench.conn_memory                 # 2000 idle viewers
    python -m bench.conn_memory --viewers 5000 --top 20

Runs LiveCore in this process (same app and socket layer as `livecore serve`)
on embedded Redis and PostgreSQL (or LIVECORE_REDIS_URL / LIVECORE_DATABASE_URL),
takes a tracemalloc snapshot, connects N anonymous viewers from a child process
(each says hello and reads its welcome, then stays idle), takes a second
snapshot and prints the difference per connection, largest first. RSS per
connection under traffic is `make bench-fanout`'s job; this says what the
bytes are (docs/decisions/0008-own-socket-layer.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import linecache
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CLIENT = r'''
import asyncio, sys, websockets
async def main(url, n):
    async def one():
        c = await websockets.connect(url, ping_interval=None, compression=None)
        await c.send('{"type":"hello","token":null}')
        await c.recv()
        return c
    conns = []
    for i in range(0, n, 200):
        conns += await asyncio.gather(*(one() for _ in range(min(200, n - i))))
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return os.path.relpath(filename, ROOT)


async def measure(viewers: int, top: int) -> None:
    import httpx
    import uvicorn

    from gateway.app import create_app, http_protocol
    from gateway.socket_protocol import socket_protocol
    from livecore.embedded import free_port
    from livecore.settings import Settings
    from tests.support import create_show

    settings = Settings()
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", http=http_protocol(settings),
                            ws=socket_protocol(app, settings.ws_ping_interval_s, settings.max_frame_bytes,
                                               settings.ws_deflate),
                            lifespan="on", log_level="warning", limit_concurrency=viewers + 1000)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    client: asyncio.subprocess.Process | None = None
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            show_id, _ = await create_show(http)
        # One viewer first: lazy imports and first-use caches are not per-connection costs.
        import websockets

        url = f"ws://127.0.0.1:{port}/ws/viewer/{show_id}"
        warm = await websockets.connect(url, ping_interval=None, compression=None)
        await warm.send('{"type":"hello","token":null}')
        await warm.recv()
        await warm.close()
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, url, str(viewers),
            stdout=asyncio.subprocess.PIPE)
        assert client.stdout is not None
        if (await asyncio.wait_for(client.stdout.readline(), 300)).strip() != b"ready":
            raise RuntimeError("the viewers did not all connect")
        await asyncio.sleep(2)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
        stats = after.filter_traces(skip).compare_to(before.filter_traces(skip), "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"\n## Python heap per idle viewer: {total / viewers:,.0f} B ({viewers} viewers, tracemalloc)\n")
        print("| bytes/viewer | blocks/viewer | where |")
        print("|---:|---:|---|")
        for stat in stats[:top]:
            frame = stat.traceback[0]
            line = linecache.getline(frame.filename, frame.lineno).strip()[:70]
            print(f"| {stat.size_diff / viewers:,.0f} | {stat.count_diff / viewers:.2f} "
                  f"| `{_short(frame.filename)}:{frame.lineno}` {line} |")
    finally:
        if client is not None and client.returncode is None:
            client.kill()
            await client.wait()
        server.should_exit = True
        await asyncio.wait_for(serving, 60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.conn_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--top", type=int, default=15, help="source lines to list")
    args = parser.parse_args(argv)

    import uvloop

    from bench.fanout_client import raise_nofile
    from livecore.embedded import EmbeddedPostgres, EmbeddedRedis

    raise_nofile()
    owned: list[EmbeddedRedis | EmbeddedPostgres] = []
    try:
        if not os.environ.get("LIVECORE_REDIS_URL"):
            redis = EmbeddedRedis().start()
            owned.append(redis)
            os.environ["LIVECORE_REDIS_URL"] = redis.url
        if not os.environ.get("LIVECORE_DATABASE_URL"):
            pg = EmbeddedPostgres().start()
            owned.append(pg)
            os.environ["LIVECORE_DATABASE_URL"] = pg.url
        from tests.support import SECRET

        os.environ.setdefault("LIVECORE_SECRET", SECRET)
        os.environ.setdefault("LIVECORE_LOG_LEVEL", "warning")
        subprocess.run([sys.executable, "-m", "livecore", "migrate"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        uvloop.run(measure(args.viewers, args.top))
    finally:
        for backend in reversed(owned):
            backend.stop()


if __name__ == "__main__":
    main()
