"""Where the wall time of the product's own processes goes (cProfile, standard library).

Two paths are profiled: a full collection (fetch: client + collector + staging, with the
emulator in its own process, so time spent waiting for it shows as socket reads) and a
commit of staged records (run in its own process; it reads Redis and writes Postgres in
threads, each profiled and merged, so its profiled seconds exceed its wall time). Self time
is grouped by who spends it: our code (plugins/github_collector), JSON, the Redis client,
the HTTP stack, psycopg, and the waits on the emulator, Redis, Postgres and other threads.
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import commit_bench
from common import Emulator, bench_redis, pg_database, say
from quota_bench import product_run

OURS = "/plugins/github_collector/"


def category(file: str, func: str) -> str:
    if OURS in file:
        return "our code"
    if file == "~":
        if "recv_into" in func:
            return "wait: emulator (HTTP reads)"
        if "'recv'" in func:
            return "wait: Redis (socket reads)"
        if "sendall" in func or "'send'" in func:
            return "socket writes"
        if "'acquire' of '_thread.lock'" in func or "SimpleQueue" in func:
            # a thread waiting for another (the commit's reader, writers and coordinator)
            return "wait: other threads"
        if "_csv" in func:
            return "csv"
        if "json" in func or "scanner" in func or "encode_basestring" in func:
            return "json"
        return "builtins"
    if "/psycopg/" in file and func == "wait":
        return "wait: Postgres"
    for key, name in (
        ("/json/", "json"),
        ("/redis/", "redis client"),
        ("/psycopg", "psycopg"),
        ("/requests/", "HTTP client stack"),
        ("/urllib3/", "HTTP client stack"),
        ("/http/", "HTTP client stack"),
        ("/email/", "HTTP client stack"),
        ("socket.py", "HTTP client stack"),
        ("/copy.py", "copy.deepcopy"),
        ("/csv.py", "csv"),
    ):
        if key in file:
            return name
    return "other python"


def summarize(stats: pstats.Stats, top: int = 8) -> dict:
    raw = stats.stats  # type: ignore[attr-defined]  # {(file, line, func): (cc, nc, tt, ct, callers)}
    total = sum(v[2] for v in raw.values()) or 1e-9
    cats: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, tt, _ct, callers) in raw.items():
        c = category(file, func)
        if c == "builtins" and callers:
            # A builtin (isinstance, bytes.startswith...) counts for whoever called it: the
            # per-edge self time splits it exactly.
            for (cfile, _cl, cfunc), edge in callers.items():
                cc = category(cfile, cfunc)
                cats[cc] = cats.get(cc, 0.0) + edge[2]
            continue
        cats[c] = cats.get(c, 0.0) + tt
    ours = [
        (f"{Path(file).name}:{func}", nc, tt, ct)
        for (file, _line, func), (_cc, nc, tt, ct, _c) in raw.items()
        if OURS in file
    ]

    def fmt(rows: list) -> list[dict]:
        return [
            {
                "function": name,
                "calls": nc,
                "self_s": round(tt, 3),
                "cumulative_s": round(ct, 3),
                "cum_share": round(ct / total, 3),
            }
            for name, nc, tt, ct in rows
        ]

    return {
        "profiled_s": round(total, 2),
        "by_category": {
            k: {"s": round(v, 2), "share": round(v / total, 3)}
            for k, v in sorted(cats.items(), key=lambda kv: -kv[1])
        },
        "ours_by_self": fmt(sorted(ours, key=lambda r: -r[2])[:top]),
        "ours_by_cumulative": fmt(sorted(ours, key=lambda r: -r[3])[: top + 4]),
    }


def run(fetch_specs: list[tuple[str, dict]], commit_records: int) -> dict:
    """Profile the fetch path on each (label, dataset), then a commit of ``commit_records``."""
    out: dict = {"fetch": []}
    for label, spec in fetch_specs:
        say(f"profile: full collection under cProfile ({label})")
        with Emulator(spec) as emu, bench_redis("profile") as r:
            prof = cProfile.Profile()
            cpu0 = time.process_time()
            res = product_run(emu, r, emu.repos, profiler=prof)
            cpu = time.process_time() - cpu0
        out["fetch"].append(
            {
                "label": label,
                "repos": len(emu.repos),
                "wall_s": round(res["seconds"], 1),
                "cpu_s": round(cpu, 1),
                "requests": res["requests"],
                "steps": res["steps"],
                "users": res["users"],
                **summarize(pstats.Stats(prof)),
            }
        )
    say(f"profile: commit of {commit_records:,} records under cProfile")
    with (
        tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp,
        bench_redis("profile") as r,
        pg_database("prof") as (db, _),
    ):
        path = str(Path(tmp) / "commit.prof")
        res = commit_bench.commit_once(r, db, commit_records, profile=path)
        out["commit"] = {
            "wall_s": res["commit_s"],
            "records": res["records"],
            **summarize(pstats.Stats(path)),
        }
    return out
