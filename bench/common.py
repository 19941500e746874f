"""Shared pieces of the benchmarks: the emulator process, Redis and Postgres scratch space,
the product's client, memory sampling and formatting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

import psutil  # noqa: E402 - Airflow's own dependency
import redis as redis_lib  # noqa: E402
import requests  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
ALL_RELATIONS = ["contributors", "forkers", "stargazers", "watchers"]
TOKEN_NAME = "collab"  # noqa: S105 - a name, not a secret
TOKEN = "bench-token-collab-5f0c2a9e"  # noqa: S105 - a dummy value only the emulator knows
# Limits high enough that no run waits for a quota reset or a secondary limit: the figures
# are the units the emulator charged, and waiting would only measure the clock.
TOKEN_CONFIG = {
    "name": TOKEN_NAME,
    "token": TOKEN,
    "collaborator_repos": ["*"],  # stargazers and watchers visible everywhere
    "core_limit": 100_000_000,
    "graphql_limit": 100_000_000,
}
EMULATOR_CONFIG = {
    "secondary_rest_points_per_minute": 1_000_000_000,
    "secondary_graphql_points_per_minute": 1_000_000_000,
    "secondary_max_concurrent": 1000,
    # Off as the other secondary limits: the emulator answers a 1,000-node query in
    # milliseconds but books it a second of GraphQL CPU, so the budget, not our code, would
    # set the wall time. The quota-bound runs switch it on where they measure it.
    "graphql_cpu_seconds_per_minute": None,
    "log_limit": 10,  # the request log is not used, keep the emulator's memory flat
}
# The emulator's secondary limits are raised above, so the client's own pacing under GitHub's
# (720 REST / 1,600 GraphQL requests per minute and token by default) is turned off too: on
# GitHub that pace sets the wall time; here the wall time is our code's.
NO_PACE = {"core": 0, "graphql": 0}
GITHUB_EXTRA = {"reserve": 0, "rest_per_minute": 0, "graphql_per_minute": 0}


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- emulator ---------------------------------------------------------------------------------
class Emulator:
    """The emulator in a child process (see emulator_proc.py), driven over its HTTP routes."""

    def __init__(self, spec: dict, truth: bool = False) -> None:
        self.spec = spec
        self.truth_wanted = truth
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.http = requests.Session()

    def __enter__(self) -> Emulator:
        opts = {
            "spec": self.spec,
            "tokens": [TOKEN_CONFIG],
            "config": EMULATOR_CONFIG,
            "truth": self.truth_wanted,
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "emulator_proc.py"), json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited before it was ready")
        self.info = json.loads(line)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        if self.proc is not None:
            if self.proc.stdin:
                self.proc.stdin.close()  # the child stops when stdin closes
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def repos(self) -> list[str]:
        return self.info["repos"]

    @property
    def truth(self) -> dict:
        return self.info.get("truth") or {}

    def stats(self) -> dict:
        return self.http.get(self.url + "/_emulator/stats", timeout=30).json()

    def units(self) -> dict[str, int]:
        """Quota units charged to the bench token so far: {core, graphql, total}."""
        c = self.stats()["cost_by_token"][TOKEN_NAME]
        return {
            "core": int(c["core"]),
            "graphql": int(c["graphql"]),
            "total": int(c["core"]) + int(c["graphql"]),
        }

    def mutate(self, op: str, **kw: Any) -> Any:
        r = self.http.post(self.url + "/_emulator/mutate", json={"op": op, **kw}, timeout=60)
        body = r.json()
        if not body.get("ok"):
            raise RuntimeError(f"mutate {op}: {body}")
        return body["result"]

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def units_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


# -- Redis --------------------------------------------------------------------------------------
class BenchRedis:
    """A Redis key prefix of our own; every key under it is deleted at the end."""

    def __init__(self, tag: str) -> None:
        self.client = redis_lib.Redis.from_url(REDIS_URL)
        self.client.ping()
        self.prefix = f"bench:{tag}:{uuid.uuid4().hex[:8]}:"

    def keys(self) -> list[bytes]:
        return list(self.client.scan_iter(match=self.prefix + "*", count=1000))

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def own_memory(self) -> int:
        """Bytes held by our keys (MEMORY USAGE with every field sampled)."""
        pipe = self.client.pipeline(transaction=False)
        for k in self.keys():
            pipe.memory_usage(k, samples=0)
        return sum(int(v or 0) for v in pipe.execute())

    def cleanup(self) -> None:
        keys = self.keys()
        for i in range(0, len(keys), 1000):
            self.client.delete(*keys[i : i + 1000])
        self.client.close()


@contextmanager
def bench_redis(tag: str) -> Iterator[BenchRedis]:
    r = BenchRedis(tag)
    try:
        yield r
    finally:
        r.cleanup()


# -- Postgres --------------------------------------------------------------------------------
@contextmanager
def pg_database(tag: str) -> Iterator[tuple[str, str]]:
    """A fresh database (name, dsn), dropped at the end."""
    import psycopg

    name = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # generated name, not user input
    try:
        yield name, f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the product --------------------------------------------------------------------------------
def make_client(url: str, redis_client, prefix: str, reservation_id: str | None = None):
    """The product's client as the hook builds it (reserve 0: the emulator's limits are huge;
    no pacing: see NO_PACE)."""
    from github_collector.client import GitHubClient
    from github_collector.etag_cache import EtagCache
    from github_collector.quota import QuotaStore

    return GitHubClient(
        url,
        [TOKEN],
        QuotaStore(redis_client, prefix=prefix, reserve=0, per_minute=NO_PACE),
        EtagCache(redis_client, prefix=prefix),
        reservation_id=reservation_id,
    )


def airflow_env(home: Path, *, github_url: str, pg_db: str, prefix: str, extra: dict | None = None) -> dict:
    """Environment for the airflow CLI and task subprocesses: local home, our three connections."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        PYTHONPATH=str(PLUGINS),
        GITHUB_REPO_USERS_REDIS_PREFIX=prefix,
        AIRFLOW_CONN_REDIS_DEFAULT=json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": 6379}),
        AIRFLOW_CONN_POSTGRES_DEFAULT=json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": pg_db}
        ),
        AIRFLOW_CONN_GITHUB_DEFAULT=json.dumps(
            {
                "conn_type": "github_repo_users",
                "host": github_url,
                "password": TOKEN,
                "extra": GITHUB_EXTRA,
            }
        ),
    )
    env.update(extra or {})
    return env


# -- memory -------------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    rss: int
    redis: int | None = None


@dataclass
class Sampler:
    """Samples a process tree's RSS (and optionally Redis used_memory) every ``interval`` s."""

    pid: int
    interval: float = 0.1
    redis: BenchRedis | None = None
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _rss(self) -> int:
        try:
            p = psutil.Process(self.pid)
            procs = [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for q in procs:
            with suppress(psutil.NoSuchProcess):
                total += q.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            redis_mem = None
            if self.redis is not None:
                with suppress(redis_lib.RedisError):
                    redis_mem = self.redis.used_memory()
            self.samples.append(Sample(time.time(), self._rss(), redis_mem))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def peak_rss(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((s.rss for s in self.samples if start <= s.t <= end), default=0)

    def peak_redis(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((s.redis or 0 for s in self.samples if start <= s.t <= end), default=0)


# -- running things -------------------------------------------------------------------------------
def run_child(args: list[str], env: dict | None = None, timeout: float = 3600) -> dict:
    """Run ``python bench/child.py ARGS`` and return the JSON it prints on its last line."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "child.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"child {args[:2]} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def mb(n: float | None) -> float | None:
    return None if n is None else round(n / 1_048_576, 2 if n < 10_485_760 else 1)


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 1) if b else None


def as_dict(obj: Any) -> Any:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj
