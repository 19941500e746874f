"""No secret ever lands anywhere: a whole run with distinctive tokens and a database password,
one token revoked mid-run so error paths speak too, then a scan of the console (which `dags
test` does not mask), every file of the Airflow home (task logs, the metadata database with
its XComs), every Redis key and value under the prefix, and every Postgres row.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from e2e_harness import airflow_env, dags_test, migrate

from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
SECRETS = {
    "token a": "ghsecret-aaaa-7d21c9e84b3f",
    "token b": "ghsecret-bbbb-0f6e2a91c57d",
    "token c": "ghsecret-cccc-5b83d0e6f214",
    "db password": "pgsecret-dddd-e19a64c07b25",
}
TOKENS = [SECRETS["token a"], SECRETS["token b"], SECRETS["token c"]]


def _hits(blob: bytes, where: str) -> list[str]:
    out = []
    for name, value in SECRETS.items():
        for form in (value, value[-12:]):  # the whole secret, or its tail as a partial leak
            if form.encode() in blob:
                out.append(f"{name} in {where}")
    return out


def _redis_dump(redis_client, prefix: str) -> tuple[int, bytes]:
    parts: list[bytes] = []
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    for key in keys:
        parts.append(key)
        kind = redis_client.type(key)
        if kind == b"string":
            parts.append(redis_client.get(key) or b"")
        elif kind == b"hash":
            for k, v in redis_client.hgetall(key).items():
                parts += [k, v]
        elif kind == b"list":
            parts += redis_client.lrange(key, 0, -1)
        elif kind == b"set":
            parts += list(redis_client.smembers(key))
        elif kind == b"zset":
            parts += [m for m, _ in redis_client.zrange(key, 0, -1, withscores=True)]
    return len(keys), b"\n".join(parts)


def _postgres_dump(dsn: str) -> tuple[int, bytes]:
    rows: list[str] = []
    with psycopg.connect(dsn) as c:
        tables = [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for t in tables:
            rows += [r[0] for r in c.execute(f'SELECT t::text FROM "{t}" t')]  # noqa: S608 - catalog names
    return len(rows), "\n".join(rows).encode()


def test_no_secret_in_console_logs_xcom_redis_or_postgres(
    tmp_path, fresh_db, key_prefix, redis_client, figure
):
    dataset = build_dataset(DatasetSpec(seed=71, n_repos=6, n_users=700, max_per_repo=250))
    names = dataset.repo_names()
    cfg = EmulatorConfig(
        tokens=[
            TokenConfig(name=f"t{i}", token=t, collaborator_repos=tuple(names[:4]))
            for i, t in enumerate(TOKENS)
        ],
        latency_ms=5,
    )
    home = tmp_path / "airflow"
    with EmulatorServer(dataset, cfg) as srv:
        env = airflow_env(home, github_url=srv.url, tokens=TOKENS, pg_db=fresh_db[0], prefix=key_prefix)
        env["AIRFLOW_CONN_POSTGRES_DEFAULT"] = json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "login": "postgres",
                "password": SECRETS["db password"],  # trust auth ignores it; it must still never show
                "schema": fresh_db[0],
            }
        )
        migrate(env)

        def revoke_after(n: int) -> None:
            while srv.stats()["requests"] < n:
                time.sleep(0.01)
            srv.set_faults(token_valid={"t2": False})

        threading.Thread(target=revoke_after, args=(12,), daemon=True).start()
        proc = dags_test(env, {"repositories": names, "batch_size": 2})
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        rejected = [e for e in srv.request_log() if e["status"] == 401]
    assert rejected, "no token was rejected: the error paths were not exercised"

    hits = _hits((proc.stdout + proc.stderr).encode(), "console")
    files = [p for p in home.rglob("*") if p.is_file()]
    for path in files:  # task logs, and the metadata database (XComs, rendered fields, ...)
        hits += _hits(path.read_bytes(), str(path.relative_to(home)))
    n_keys, redis_blob = _redis_dump(redis_client, key_prefix)
    hits += _hits(redis_blob, "Redis")
    n_rows, pg_blob = _postgres_dump(fresh_db[1])
    hits += _hits(pg_blob, "Postgres")
    assert n_keys > 0 and n_rows > 100 and any(p.suffix == ".db" for p in files)  # the scan saw real data
    assert hits == []
    figure(
        "secrets scan",
        secrets=len(SECRETS),
        console_chars=len(proc.stdout) + len(proc.stderr),
        airflow_files=len(files),
        redis_keys=n_keys,
        postgres_rows=n_rows,
        hits=len(hits),
    )
