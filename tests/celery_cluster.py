"""A real Airflow 3 cluster on this machine, run as separate processes: the CeleryExecutor with
a Redis broker of its own, a Postgres metadata database of its own, api-server, scheduler,
dag-processor, triggerer and any number of `airflow celery worker` processes.

Used by tests/test_distributed_celery.py. Every process runs in its own process group, so
``stop()`` ends it with all its children (Celery's pool, the task supervisors, uvicorn's
workers); the metadata database is dropped and the broker's redis-server stopped with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from e2e_harness import AIRFLOW, ROOT
from private_redis import PrivateRedis

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
DAG_ID = "github_repo_users"
WORKER_NAME_ENV = "GHC_TEST_WORKER_NAME"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers: the name the test gave each worker.

    Two workers on one machine share its host name, and task_instance.hostname is what the
    worker's hostname_callable returns, so without this nobody could tell them apart.
    """
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-n:])


@dataclass
class Observed:
    """What the metadata DB showed while the run went on (sampled by ``Observer``)."""

    # (task_id, map_index, trigger_id) -> the triggerer job that took the trigger (None if unseen)
    deferrals: dict[tuple[str, int, int], int | None] = field(default_factory=dict)
    # (task_id, map_index, next_kwargs) of task instances seen resuming: a trigger's event, which
    # only the triggerer writes there, is in next_kwargs until the resumed task ends or defers
    resumed: set[tuple[str, int, str]] = field(default_factory=set)
    # (task_id, map_index, hostname) of task instances seen running
    running: set[tuple[str, int, str]] = field(default_factory=set)
    # the most task instances of one task seen running at once on distinct hosts, by task id
    hosts_at_once: Counter = field(default_factory=Counter)
    samples: int = 0


class Observer(threading.Thread):
    """Samples task instances of one DAG run: deferred ones (with their trigger) and running ones."""

    def __init__(self, dsn: str, run_id: str, interval: float = 0.3) -> None:
        super().__init__(name="metadata-observer", daemon=True)
        self.dsn, self.run_id, self.interval = dsn, run_id, interval
        self.seen = Observed()
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self._stop_event.is_set():
                    self._sample(conn)
                    self._stop_event.wait(self.interval)
                self._sample(conn)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _sample(self, conn) -> None:
        rows = conn.execute(
            "SELECT ti.task_id, ti.map_index, ti.state, ti.hostname, ti.trigger_id, tr.triggerer_id,"
            " ti.next_method, ti.next_kwargs::text"
            " FROM task_instance ti LEFT JOIN trigger tr ON tr.id = ti.trigger_id"
            " WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.state IN ('deferred', 'scheduled', 'queued', 'running')",
            (DAG_ID, self.run_id),
        ).fetchall()
        hosts: dict[str, set[str]] = {}
        for task_id, map_index, state, hostname, trigger_id, triggerer_id, next_method, next_kwargs in rows:
            if state == "deferred" and trigger_id is not None:
                key = (task_id, map_index, trigger_id)
                if self.seen.deferrals.get(key) is None:
                    self.seen.deferrals[key] = triggerer_id
                continue
            if next_method and next_kwargs and '"event"' in next_kwargs:
                self.seen.resumed.add((task_id, map_index, next_kwargs))
            if state == "running" and hostname:
                self.seen.running.add((task_id, map_index, hostname))
                hosts.setdefault(task_id, set()).add(hostname)
        for task_id, names in hosts.items():
            self.seen.hosts_at_once[task_id] = max(self.seen.hosts_at_once[task_id], len(names))
        self.seen.samples += 1

    def stop(self) -> Observed:
        self._stop_event.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error
        return self.seen


class CeleryCluster:
    """``with CeleryCluster(workdir, env) as c: c.trigger(conf); c.wait(run_id)``.

    ``env`` carries what is not the cluster's own business: the DAG's connections, the Redis
    key prefix of the product's staging, and the like. Everything Airflow-side is set here.
    """

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        *,
        workers: tuple[str, ...] = ("worker1", "worker2"),
        concurrency: int = 2,
        startup_timeout: float = 420,
    ) -> None:
        self.workdir = workdir
        self.startup_timeout = startup_timeout
        self.home = workdir / "airflow-home"
        self.logs = workdir / "process-logs"
        self.workers = workers
        self.concurrency = concurrency
        self.meta_db = f"ghc_airflow_meta_{uuid.uuid4().hex[:10]}"
        self.meta_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={self.meta_db}"
        self.api_port = _free_port()
        self._jwt_secret, self._api_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.broker = PrivateRedis(workdir, appendonly=False)
        self.procs: dict[str, Proc] = {}
        self._db_created = False
        self.base_env = env
        self.env: dict[str, str] = {}

    # -- configuration ----------------------------------------------------------------------------
    def airflow_config(self) -> dict[str, str]:
        """The Airflow settings of the cluster, as AIRFLOW__SECTION__KEY variables."""
        sa = f"postgresql://postgres@127.0.0.1:5432/{self.meta_db}"
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sa,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.broker.port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{sa}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            # Workers call the api-server's task execution API; every component signs and checks
            # the task tokens with the same secret.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self._api_secret,
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Only the runs the test triggers: no scheduled run of the @daily DAG beside them.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            # How long a task's supervisor may block between checks of its task process. With the
            # default (5 s) a task whose sockets close just before it exits is reaped up to 5 s
            # later; every deferral and resumption pays that, so the test waits 1 s at most.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # Each worker names itself in task_instance.hostname (see worker_hostname).
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "celery_cluster.worker_hostname",
        }

    def _env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env = {**base, **self.base_env, **self.airflow_config(), "AIRFLOW_HOME": str(self.home)}
        paths = [str(ROOT / "plugins"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        # `airflow` is found next to this interpreter, and so are the children it starts.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> CeleryCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        timeout = self.startup_timeout
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.broker.start()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.meta_db}"')  # generated name, not user input
        self._db_created = True
        self.env = self._env()
        self.cli(["db", "migrate"], timeout=timeout)
        self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)])
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        # --skip-serve-logs: no log server on the fixed ports 8793/8794, which other
        # processes on this machine may hold; the logs are files under the shared home.
        self._spawn("triggerer", ["triggerer", "--skip-serve-logs"])
        for name in self.workers:
            self._spawn(
                name,
                ["celery", "worker", "-H", f"{name}@%h", "-c", str(self.concurrency), "--skip-serve-logs"],
                extra_env={WORKER_NAME_ENV: name},
            )
        self.wait_ready(timeout)

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [AIRFLOW, *args],
                env={**self.env, **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends it with its children
            )
        self.procs[name] = Proc(name, popen, log)

    def cli(self, args: list[str], timeout: float = 300) -> str:
        proc = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def check_alive(self) -> None:
        dead = {n: p.popen.returncode for n, p in self.procs.items() if p.popen.poll() is not None}
        if dead:
            raise RuntimeError(
                f"cluster processes exited: {dead}\n"
                + "\n".join(f"--- {n} ---\n{self.procs[n].tail()}" for n in dead)
            )

    def wait_ready(self, timeout: float) -> None:
        """Until the api-server answers, scheduler and triggerer run, the DAG is parsed and every
        worker said it is ready."""
        import requests

        deadline = time.time() + timeout
        pending = ["api-server", "jobs", "dag", *self.workers]
        while pending:
            self.check_alive()
            if time.time() > deadline:
                raise TimeoutError(f"the cluster was not ready within {timeout:.0f}s: waiting for {pending}")
            name = pending[0]
            if name == "api-server":
                try:
                    ok = requests.get(f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health", timeout=5).ok
                except requests.RequestException:
                    ok = False
            elif name == "jobs":
                with psycopg.connect(self.meta_dsn) as conn:
                    jobs = {
                        r[0]
                        for r in conn.execute("SELECT job_type FROM job WHERE state = 'running'").fetchall()
                    }
                ok = {"SchedulerJob", "TriggererJob"} <= jobs
            elif name == "dag":
                with psycopg.connect(self.meta_dsn) as conn:
                    ok = bool(
                        conn.execute(
                            "SELECT 1 FROM dag WHERE dag_id = %s AND NOT is_paused AND NOT is_stale",
                            (DAG_ID,),
                        ).fetchone()
                    )
            else:
                ok = re.search(rf"{name}@\S+ ready\.", self.procs[name].text()) is not None
            if ok:
                pending.pop(0)
            else:
                time.sleep(0.5)

    def stop(self) -> None:
        """End every process group (TERM, then KILL), drop the metadata DB, stop the broker."""
        errors: list[str] = []
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.time() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, deadline - time.time()))
            # Whatever is left of the group (the leader or children that ignored TERM) is killed.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                errors.append(f"{proc.name} (pid {proc.popen.pid}) did not exit")
        if self._db_created:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.meta_db}" WITH (FORCE)')
            self._db_created = False
        self.broker.stop()
        if errors:
            raise RuntimeError("; ".join(errors))

    # -- runs ---------------------------------------------------------------------------------------
    def trigger(self, conf: dict, run_id: str | None = None) -> str:
        run_id = run_id or f"celery_e2e__{uuid.uuid4().hex[:8]}"
        self.cli(["dags", "trigger", DAG_ID, "--run-id", run_id, "-c", json.dumps(conf)])
        return run_id

    def run_state(self, run_id: str) -> str | None:
        with psycopg.connect(self.meta_dsn) as conn:
            row = conn.execute(
                "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id)
            ).fetchone()
        return row[0] if row else None

    def wait(self, run_id: str, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_alive()
            state = self.run_state(run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s: {self.summary(run_id)}")

    def task_instances(self, run_id: str) -> list[dict]:
        with psycopg.connect(self.meta_dsn) as conn:
            cur = conn.execute(
                "SELECT task_id, map_index, state, try_number, hostname, next_method"
                " FROM task_instance WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index",
                (DAG_ID, run_id),
            )
            cols = [c.name for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def summary(self, run_id: str) -> str:
        states = Counter((t["task_id"], t["state"]) for t in self.task_instances(run_id))
        return ", ".join(f"{task} {state}: {n}" for (task, state), n in sorted(states.items(), key=str))

    def worker_executions(self, run_id: str) -> dict[str, Counter]:
        """Per worker, how many times it started each task instance of the run, by
        (task_id, map_index), from the worker's own log: a first start, a retry and every
        resumption after a deferral count once each."""
        pattern = re.compile(
            r"Executing workload in Celery: .*?task_id='([^']+)', dag_id='([^']+)', run_id='([^']+)',"
            r".*?map_index=(-?\d+)"
        )
        out: dict[str, Counter] = {}
        for name in self.workers:
            out[name] = Counter(
                (task, int(index))
                for task, dag, run, index in pattern.findall(self.procs[name].text())
                if dag == DAG_ID and run == run_id
            )
        return out

    def trigger_events(self, run_id: str) -> list[tuple[str, int, int, int]]:
        """(task_id, map_index, trigger_id, triggerer job id) of triggers that fired for the run,
        by the triggerer's own logs.

        The triggerer writes each trigger's log beside its task's log, as
        ``<task log>.trigger.<triggerer job id>.log``; a trigger that fired logs "Trigger fired event"
        with the trigger's name, ``<dag_id>/<run_id>/<task_id>/<map_index>/<try> (ID <trigger id>)``.
        A task that defers again in the same try gets a new trigger whose log replaces the file,
        so only the last trigger of each task try is found here.
        """
        found = []
        for path in (self.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}").rglob(
            "*.log.trigger.*.log"
        ):
            job = int(path.name.rsplit(".", 2)[-2])
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") != "Trigger fired event":
                    continue
                m = re.fullmatch(
                    rf"{DAG_ID}/{re.escape(run_id)}/([^/]+)/(-?\d+)/\d+ \(ID (\d+)\)", entry["name"]
                )
                if m:
                    found.append((m.group(1), int(m.group(2)), int(m.group(3)), job))
        return found

    def job_ids(self, job_type: str) -> set[int]:
        with psycopg.connect(self.meta_dsn) as conn:
            return {r[0] for r in conn.execute("SELECT id FROM job WHERE job_type = %s", (job_type,))}

    def process_tails(self, n: int = 30) -> str:
        return "\n".join(f"--- {name} ---\n{p.tail(n)}" for name, p in self.procs.items())
