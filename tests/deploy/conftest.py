"""Fixtures of the deployment tests: a real 3-master Redis Cluster and nginx."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.deploy.cluster import LocalCluster


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(3).start()
    yield cluster
    cluster.stop()


def find_nginx() -> str | None:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """Debian's nginx; installed here when missing. Never skipped: without it
    the test fails and says how to install it."""
    found = find_nginx()
    if found:
        return found
    how = "install it with: apt-get install -y nginx"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"nginx is not installed and cannot be installed from here; {how}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], env=env,
                             capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        # The package lists may be missing or stale on a fresh machine.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        install = subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], env=env,
                                 capture_output=True, text=True, timeout=300)
    found = find_nginx()
    if install.returncode != 0 or not found:
        pytest.fail(f"could not install nginx ({how}):\n{install.stdout[-2000:]}{install.stderr[-2000:]}")
    return found
