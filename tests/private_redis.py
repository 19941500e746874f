"""A Redis server of the test's own, so a test can restart or flush it without touching the shared one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis as redis_lib


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """redis-server on a free port; ``appendonly`` is Redis' AOF persistence."""

    def __init__(self, workdir: Path, *, appendonly: bool, extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.appendonly = appendonly
        self.extra_args = extra_args  # more redis-server options, e.g. ("--maxmemory", "64mb")
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"

    def start(self) -> PrivateRedis:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.time() + 20
        while True:
            try:
                client.ping()
                break
            except redis_lib.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis(host="127.0.0.1", port=self.port)

    def crash(self) -> None:
        """Kill the server the hard way (what an OOM kill or a node loss does)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=20)
            self.proc = None

    def restart(self) -> None:
        self.crash()
        self.start()

    def stop(self) -> None:
        self.crash()
