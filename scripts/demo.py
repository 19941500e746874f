"""`make demo`: run the github_repo_users DAG end to end on this machine.

1. a local Airflow home under .airflow/demo (SQLite metadata), migrated;
2. connections (as AIRFLOW_CONN_* variables) to the local Redis and Postgres, and to the
   bundled GitHub emulator, which this script starts and stops;
3. `airflow dags test github_repo_users` on the emulator's demo repositories;
4. a short summary from Postgres (github_collector.summary): repositories, users, (repo, user)
   pairs and relations and how they add up, why each list that is not complete is so, and the
   quota spent.

With GITHUB_TOKEN set it targets https://api.github.com instead of the emulator and collects
the DAG's default repositories (the list packaged in github_collector/repositories.json).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _demo_home() -> Path:
    """.airflow/demo; Airflow 2.x gets its own: a metadata DB migrated by one major version
    cannot be opened by the other (`make demo AIRFLOW=2.11` after `make demo`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("apache-airflow").split(".")[0])
    except PackageNotFoundError:
        major = 3
    return ROOT / ".airflow" / ("demo" if major >= 3 else f"demo-airflow{major}")


HOME = _demo_home()
PG_ADMIN = os.environ.get("DEMO_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_DB = os.environ.get("DEMO_PG_DATABASE", "github_repo_users_demo")
REDIS_URL = os.environ.get("DEMO_REDIS_URL", "redis://127.0.0.1:6379")
PREFIX = "ghc-demo:"

sys.path.insert(0, str(ROOT / "plugins"))


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def airflow_env(
    home: Path = HOME,
    pg_db: str = PG_DB,
    prefix: str = PREFIX,
    base: dict | None = None,
    *,
    metadata_db: str | None = None,
    executor: str | None = None,
) -> dict[str, str]:
    """A local Airflow with this project's DAG and connections to Redis and Postgres.

    Its metadata DB is SQLite in ``home`` unless ``metadata_db`` (an SQLAlchemy URL, e.g. a
    Postgres database for the LocalExecutor) says otherwise; ``executor`` overrides Airflow's
    default. Shared with the end-to-end tests, which point it at their own home, database and prefix.
    """
    env = dict(os.environ if base is None else base)
    if executor:
        env["AIRFLOW__CORE__EXECUTOR"] = executor
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata_db or f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "plugins"), env.get("PYTHONPATH", "")])),
        GITHUB_REPO_USERS_REDIS_PREFIX=prefix,
        AIRFLOW_CONN_REDIS_DEFAULT=json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": 6379}),
        AIRFLOW_CONN_POSTGRES_DEFAULT=json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": pg_db}
        ),
    )
    return env


def run(cmd: list[str], env: dict[str, str], log_name: str) -> None:
    log = HOME / log_name
    with log.open("w") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(tail))
        raise SystemExit(f"[demo] {' '.join(cmd[:3])} failed (exit {proc.returncode}); full log: {log}")


def ensure_database(fresh: bool) -> None:
    """The demo's own database; `make demo` starts it empty so its summary is this run's."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')  # fixed demo name
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{PG_DB}"')  # fixed demo name, not user input


def clear_demo_redis() -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=PREFIX + "*", count=1000))
    if keys:
        r.delete(*keys)


def start_emulator(tokens: dict[str, str], collab: list[str]) -> tuple[subprocess.Popen, str]:
    args = [
        sys.executable,
        "-m",
        "github_emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--preset",
        "demo",
    ]
    names = list(tokens)
    env = os.environ.copy()
    env["PYTHONPATH"] = str(ROOT / "plugins")
    # Tokens go through the environment, not argv, so they do not show in process lists.
    # The first token is a collaborator of a few repos, so their stargazers and watchers show.
    specs = [f"{names[0]}={tokens[names[0]]}:collab={','.join(collab)}"] + [
        f"{n}={tokens[n]}" for n in names[1:]
    ]
    env["EMULATOR_TOKENS"] = ";".join(specs)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on" in line:
            return proc, line.strip().split()[-1]
    proc.kill()
    raise SystemExit("[demo] the emulator did not start")


def summary(emulator_url: str | None) -> None:
    import psycopg

    from github_collector.summary import summary_lines

    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={PG_DB}") as conn:
        lines = summary_lines(conn)
        run = conn.execute(
            "SELECT status, counts FROM github_collect_run ORDER BY finished_at DESC NULLS LAST LIMIT 1"
        ).fetchone()
    print()
    print("=" * 64)
    print("github_repo_users: summary from Postgres")
    for line in lines:
        print("  " + line)
    if run:
        quota = (run[1] or {}).get("quota", {})
        print(
            f"  last run               : {run[0]}; pages {quota.get('pages', 0)}, "
            f"quota spent core={quota.get('cost_core', 0)} graphql={quota.get('cost_graphql', 0)}"
        )
    if emulator_url:
        import requests

        stats = requests.get(emulator_url + "/_emulator/stats", timeout=10).json()
        spent = dict(stats.get("cost_by_token", {}))
        print(f"  emulator accounting    : {stats.get('requests')} requests, spent {spent}")
    print("=" * 64)


def standalone() -> None:
    """`make airflow`: airflow standalone with this project's DAG, on the emulator (or GitHub)."""
    HOME.mkdir(parents=True, exist_ok=True)
    env = airflow_env()
    env["AIRFLOW__API__PORT"] = os.environ.get("AIRFLOW_PORT", "8080")
    airflow = shutil.which("airflow", path=env.get("PATH")) or str(Path(sys.executable).with_name("airflow"))
    ensure_database(fresh=False)
    proc = None
    try:
        real = os.environ.get("GITHUB_TOKEN")
        if real:
            conn = {"conn_type": "github_repo_users", "host": "https://api.github.com", "password": real}
        else:
            from github_emulator import PRESETS, build_dataset

            repos = build_dataset(PRESETS["demo"]).repo_names()
            tokens = {"demo-a": "demo-" + secrets.token_hex(12), "demo-b": "demo-" + secrets.token_hex(12)}
            proc, url = start_emulator(tokens, repos[:3])
            # Default the Params form (and scheduled runs and backfills) to the emulator's repositories.
            repos_file = HOME / "emulator-repositories.json"
            repos_file.write_text(json.dumps({"repositories": repos}))
            env["GITHUB_REPO_USERS_REPOS_FILE"] = str(repos_file)
            say(f"emulator at {url}; the DAG defaults to its {len(repos)} repositories")
            conn = {
                "conn_type": "github_repo_users",
                "host": url,
                "password": tokens["demo-a"],
                "extra": {"tokens": [tokens["demo-b"]]},
            }
        env["AIRFLOW_CONN_GITHUB_DEFAULT"] = json.dumps(conn)
        say("airflow standalone: UI on http://localhost:8080 (the admin password is printed below)")
        subprocess.run([airflow, "standalone"], env=env, check=False)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    if "--standalone" in sys.argv:
        standalone()
        return
    HOME.mkdir(parents=True, exist_ok=True)
    env = airflow_env()
    airflow = shutil.which("airflow", path=env.get("PATH")) or str(Path(sys.executable).with_name("airflow"))
    say(f"Airflow home {HOME} (SQLite)")
    run([airflow, "db", "migrate"], env, "db-migrate.log")
    ensure_database(fresh=True)
    clear_demo_redis()
    proc = None
    emulator_url = None
    conf: dict = {}
    try:
        real = os.environ.get("GITHUB_TOKEN")
        if real:
            say("GITHUB_TOKEN is set: collecting from https://api.github.com")
            env["AIRFLOW_CONN_GITHUB_DEFAULT"] = json.dumps(
                {"conn_type": "github_repo_users", "host": "https://api.github.com", "password": real}
            )
        else:
            from github_emulator import PRESETS, build_dataset

            repos = build_dataset(PRESETS["demo"]).repo_names()
            tokens = {"demo-a": "demo-" + secrets.token_hex(12), "demo-b": "demo-" + secrets.token_hex(12)}
            proc, emulator_url = start_emulator(tokens, repos[:3])
            say(f"emulator at {emulator_url}; {len(repos)} repositories, 2 tokens")
            env["AIRFLOW_CONN_GITHUB_DEFAULT"] = json.dumps(
                {
                    "conn_type": "github_repo_users",
                    "host": emulator_url,
                    "password": tokens["demo-a"],
                    "extra": {"tokens": [tokens["demo-b"]], "reserve": 5},
                }
            )
            conf = {"repositories": repos, "batch_size": 4}
        say(f"airflow dags test github_repo_users (log: {(HOME / 'dags-test.log').relative_to(ROOT)})")
        started = time.time()
        run([airflow, "dags", "test", "github_repo_users", "-c", json.dumps(conf)], env, "dags-test.log")
        say(f"DAG run finished in {time.time() - started:.1f} s")
        summary(emulator_url)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
