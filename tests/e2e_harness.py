"""Run the real DAG through `airflow dags test` and read back what it stored."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
sys.path.insert(0, str(ROOT / "scripts"))
import demo  # noqa: E402  (scripts/ is not a package)


def airflow_env(
    home: Path,
    *,
    github_url: str,
    tokens: list[str],
    pg_db: str,
    prefix: str,
    extra: dict | None = None,
    metadata_db: str | None = None,
    executor: str | None = None,
) -> dict:
    """The demo's local Airflow environment, pointed at this test's emulator, database and prefix.

    SQLite metadata in ``home`` unless ``metadata_db`` (see ``metadata_url``) names another.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env = demo.airflow_env(home, pg_db, prefix, base=base, metadata_db=metadata_db, executor=executor)
    env["PYTHONPATH"] = str(ROOT / "plugins")
    # `airflow` and `python` of this interpreter's venv first, for anything Airflow starts by name
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(AIRFLOW).parent), env.get("PATH", "")]))
    env["AIRFLOW_CONN_GITHUB_DEFAULT"] = json.dumps(
        {
            "conn_type": "github_repo_users",
            "host": github_url,
            "password": tokens[0],
            "extra": {"tokens": tokens[1:], "reserve": 0},
        }
    )
    env.update(extra or {})
    return env


def airflow_major() -> int:
    """The major version of the Airflow installed next to this interpreter (without importing it)."""
    from importlib.metadata import version

    return int(version("apache-airflow").split(".")[0])


def metadata_url(db: str) -> str:
    """SQLAlchemy URL of a metadata database on the local Postgres (psycopg2 ships with 2.11 and 3.x)."""
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """An airflow command in the background, in a session of its own, its output in a log file.

    Airflow's task runners move tasks into process groups of their own, but not out of the
    session, so ``stop()`` ends every process of the session: nothing outlives the test.
    """

    def __init__(self, args: list[str], env: dict, log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _members(self) -> list[int]:
        import psutil

        sid = self.proc.pid if self.proc is not None else None
        found = []
        for p in psutil.process_iter(["status"]):
            try:
                if os.getsid(p.pid) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(p.pid)
            except (OSError, psutil.Error):
                continue
        return found

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to every process of the session; False if none is left."""
        members = self._members()
        for pid in members:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, sig)
        return bool(members)

    def stop(self, grace: float = 20.0) -> None:
        stop_all([self], grace)


def stop_all(services: list[Service], grace: float = 20.0) -> None:
    """SIGTERM to every process of the services' sessions, SIGKILL to those left after ``grace`` s."""
    started = [s for s in services if s.proc is not None]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        pending = [s for s in started if s.signal(sig)]
        end = time.monotonic() + wait
        while pending and time.monotonic() < end:
            time.sleep(0.2)
            for s in pending:
                s.proc.poll()  # reap the leader; the others are reparented and reaped
            pending = [s for s in pending if s._members()]
        if not pending:
            break
    for s in started:
        s.proc.wait(timeout=10)


def migrate(env: dict) -> None:
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)


def dags_test(
    env: dict, conf: dict, timeout: float = 600, logical_date: str | None = None
) -> subprocess.CompletedProcess:
    date = [logical_date] if logical_date else []
    return subprocess.run(
        [AIRFLOW, "dags", "test", "github_repo_users", *date, "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _iso(v):
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return v


ROLE_COLUMNS = {"contributor": "contributions", "stargazer": "starred_at", "forker": "forked_at"}


def read_back(dsn: str) -> tuple[dict, dict, dict]:
    """(users, links, repos) in the shapes the collector produces."""
    from github_collector.records import USER_FIELDS

    with psycopg.connect(dsn) as conn:
        cols = ", ".join(USER_FIELDS)
        users = {}
        for row in conn.execute(f"SELECT {cols} FROM github_user"):  # noqa: S608 - fixed names
            rec = {f: _iso(v) for f, v in zip(USER_FIELDS, row, strict=True)}
            users[rec["user_id"]] = rec
        links = {}
        for rid, uid, rels, contributions, starred_at, forked_at in conn.execute(
            "SELECT repo_id, user_id, relations, contributions, starred_at, forked_at FROM github_repo_user"
        ):
            for role in rels:
                links[(rid, uid, role)] = {
                    "contributions": contributions,
                    "starred_at": _iso(starred_at),
                    "forked_at": _iso(forked_at),
                }
        repos = {}
        for requested, rid, status in conn.execute(
            "SELECT requested_name, repo_id, status FROM github_repo_request"
        ):
            repos[requested] = {
                "requested": requested,
                "repo_id": rid,
                "full_name": None,
                "status": status,
                "unavailable_relations": [],
                "relation_status": {},
                "stargazer_count": None,
                "watcher_count": None,
            }
        by_id = {
            r[0]: r
            for r in conn.execute(
                "SELECT repo_id, full_name, unavailable_relations, relation_status, stargazer_count, watcher_count"
                " FROM github_repository"
            )
        }
        for rec in repos.values():
            row = by_id.get(rec["repo_id"])
            if row:
                rec.update(
                    full_name=row[1],
                    unavailable_relations=list(row[2]),
                    relation_status=row[3] or {},
                    stargazer_count=row[4],
                    watcher_count=row[5],
                )
    return users, links, repos


def read_authored(dsn: str) -> tuple[dict, dict]:
    """(tallies, authorless) as stored: per current (repo, user, author role) its item count and
    first and last item; per repository the items no user authored (as support.tally_items)."""
    with psycopg.connect(dsn) as conn:
        tallies = {
            (rid, uid, role): (n, _iso(first), _iso(last))
            for rid, uid, role, n, first, last in conn.execute(
                "SELECT repo_id, user_id, relation, authored_items, first_authored_at, last_authored_at"
                " FROM github_repo_user_relation WHERE relation LIKE '%\\_author' AND removed_at IS NULL"
            )
        }
        authorless = {
            rid: doc
            for rid, doc in conn.execute(
                "SELECT repo_id, authorless_items FROM github_repository WHERE authorless_items IS NOT NULL"
            )
        }
    return tallies, authorless


def duplicate_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) - count(DISTINCT (repo_id, user_id)) FROM github_repo_user"
        ).fetchone()[0]


def row_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
            for t in ("github_repository", "github_repo_request", "github_user", "github_repo_user")
        }


def asset_event_extras(env: dict, asset_name: str) -> list[dict]:
    """The ``extra`` of every event of an Asset (a Dataset on Airflow 2.x), oldest first, as
    Airflow recorded them in the SQLite metadata DB of ``env`` (``airflow_env``'s default)."""
    import sqlite3

    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert url.startswith("sqlite:///"), url
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "asset_event" in tables:
            sql = (
                "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
                " WHERE a.name = ? ORDER BY e.id"
            )
        else:  # Airflow 2.x: an Asset is a Dataset, named by its URI
            sql = (
                "SELECT e.extra FROM dataset_event e JOIN dataset d ON d.id = e.dataset_id"
                " WHERE d.uri = ? ORDER BY e.id"
            )
        return [
            json.loads(extra) if isinstance(extra, str) else extra
            for (extra,) in db.execute(sql, (asset_name,))
        ]
