"""Quota exhaustion at random points, with one and three tokens, and a token revoked mid-run.

Windows are seconds long, so a run crosses many of them. Every wait for a reset must be a
deferral (the task hands its worker slot back), the run must resume right after the reset,
and the final data must be exact. A revoked token is named, taken out of the pool, and the
run goes on with the others; when every token is revoked the run fails saying so, and is not
recorded as complete.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from e2e_harness import duplicate_count, read_back
from fault_harness import ALL, InProcessRun, conn_env, recording_sleep
from support import diff_against_truth

from github_collector.quota import fingerprint
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
TOKENS = [f"quota-fault-token-{c}-7f3a2b" for c in "abc"]


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(DatasetSpec(seed=31, n_repos=6, n_users=700, max_per_repo=260))


@pytest.fixture()
def env(monkeypatch, fresh_db, key_prefix):
    monkeypatch.setattr("github_collector.client.time.sleep", recording_sleep)

    def apply(url: str, tokens: list[str], **extra) -> None:
        values = conn_env(
            github_url=url,
            tokens=tokens,
            pg_db=fresh_db[0],
            prefix=key_prefix,
            # every wait a deferral ending at the reset (test_resume_lead covers ending early)
            github_extra={"max_inline_wait": 0, "resume_lead": 0, **extra},
        )
        for k, v in values.items():
            monkeypatch.setenv(k, v)

    return apply


def _resume_lags(srv, deferrals: list[float]) -> list[float]:
    """Seconds from each awaited reset (the deferral's moment minus its 1 s margin) to the next request."""
    times = sorted(e["t"] for e in srv.request_log() if e["path"] != "/rate_limit")
    lags = []
    for moment in deferrals:
        reset = moment - 1
        after = [t for t in times if t >= reset]
        if after:
            lags.append(round(after[0] - reset, 2))
    return lags


def _check_exact(dataset, names, dsn) -> None:
    truth = dataset.truth(ALL, collaborator_repos=["*"])
    assert diff_against_truth(truth, *read_back(dsn)) == []
    assert duplicate_count(dsn) == 0


@pytest.mark.parametrize("n_tokens", [1, 3])
def test_exhaustion_at_random_points_defers_and_completes_exactly(
    n_tokens, dataset, env, fresh_db, figure, redis_client
):
    seed = random.randrange(10_000)
    rng = random.Random(seed)
    # Small, uneven windows: every token runs dry at a different, random point of the run.
    tokens = [
        TokenConfig(
            name=f"t{i}",
            token=TOKENS[i],
            # together the tokens hold less than the run needs: all of them run dry at once
            core_limit=rng.randint(4, 9) // n_tokens + 2,
            graphql_limit=rng.randint(3, 7) // n_tokens + 1,
            collaborator_repos=("*",),
        )
        for i in range(n_tokens)
    ]
    names = dataset.repo_names()
    with EmulatorServer(dataset, EmulatorConfig(tokens=tokens, window_seconds=3)) as srv:
        env(srv.url, TOKENS[:n_tokens])
        run = InProcessRun(f"quota-{n_tokens}-{seed}", slots=3)
        out = run.run({"repositories": names, "batch_size": 3})
        slots = out["slots"]
        assert all(o.state in ("success", "skipped") for o in slots.values()), {
            s: repr(o.error) for s, o in slots.items()
        }
        assert out["commit"].state == "success", repr(out["commit"].error)
        deferrals = [m for o in slots.values() for m in o.deferrals]
        sleeps = [s for o in slots.values() for s in o.sleeps]
        assert deferrals, f"the quota never ran out (seed {seed}): the test proves nothing"
        # No wait for a reset inside a task: every such wait was a deferral.
        assert max(sleeps, default=0) < 1.0, sorted(sleeps)[-5:]
        assert srv.stats()["primary_limit_hits"] == 0  # never sent a request it knew would fail
        _check_exact(dataset, names, fresh_db[1])
        lags = _resume_lags(srv, deferrals)
        figure(
            f"quota exhaustion, {n_tokens} token(s)",
            seed=seed,
            deferrals=len(deferrals),
            longest_sleep_in_task_s=round(max(sleeps, default=0), 3),
            resumed_after_reset_s_max=max(lags, default=None),
            primary_limit_hits=0,
            lost=0,
            duplicates=0,
        )


def test_deferrals_end_resume_lead_early_and_the_task_sleeps_to_the_reset(
    dataset, env, fresh_db, figure, redis_client
):
    """A deferral for quota ends resume_lead (default 3 s) before the reset it waits for, and
    the resumed task sleeps the rest: Airflow's way back from a trigger does not delay the
    first request of the new window, and no request goes out before the reset."""
    tokens = [
        TokenConfig(name="t0", token=TOKENS[0], core_limit=6, graphql_limit=5, collaborator_repos=("*",))
    ]
    names = dataset.repo_names()
    with EmulatorServer(dataset, EmulatorConfig(tokens=tokens, window_seconds=8)) as srv:
        env(srv.url, TOKENS[:1], resume_lead=3)
        out = InProcessRun("quota-lead", slots=2).run({"repositories": names, "batch_size": 3})
        slots = out["slots"]
        assert all(o.state in ("success", "skipped") for o in slots.values()), {
            s: repr(o.error) for s, o in slots.items()
        }
        assert out["commit"].state == "success", repr(out["commit"].error)
        log = srv.request_log()
    deferrals = [m for o in slots.values() for m in o.deferrals]
    sleeps = [s for o in slots.values() for s in o.sleeps]
    assert deferrals, "the quota never ran out: the test proves nothing"
    resets = sorted({e["reset"] for e in log if e.get("cost")})
    ahead = []  # seconds each deferral ended before the reset (+1 s pad) it waited for
    for moment in deferrals:
        awaited = min((r + 1 for r in resets if r + 1 > moment), default=None)
        assert awaited is not None, f"a deferral until {moment} waited for no reset"
        ahead.append(round(awaited - moment, 2))
    assert all(0 < a <= 3 + 1e-3 for a in ahead), ahead
    # the rest of each wait was slept in the task, a lead's worth at most
    assert sleeps and max(sleeps) <= 3 + 0.1, sorted(sleeps)[-5:]
    assert not [e for e in log if e.get("early")], "a request went out before its prescribed wait"
    assert srv.stats()["primary_limit_hits"] == 0
    _check_exact(dataset, names, fresh_db[1])
    figure(
        "deferrals ending before the reset",
        deferrals=len(deferrals),
        ended_before_reset_s=f"{min(ahead)}..{max(ahead)}",
        longest_sleep_in_task_s=round(max(sleeps), 2),
        lost=0,
        duplicates=0,
    )


def test_a_token_revoked_mid_run_is_named_and_the_run_goes_on(dataset, env, fresh_db, figure, product_log):
    tokens = [TokenConfig(name=f"t{i}", token=TOKENS[i], collaborator_repos=("*",)) for i in range(3)]
    names = dataset.repo_names()
    with EmulatorServer(dataset, EmulatorConfig(tokens=tokens, latency_ms=5)) as srv:
        env(srv.url, TOKENS)
        revoked = threading.Event()

        def revoke_after(n: int) -> None:
            while srv.stats()["requests"] < n:
                time.sleep(0.01)
            srv.set_faults(token_valid={"t1": False})
            revoked.set()

        threading.Thread(target=revoke_after, args=(15,), daemon=True).start()
        out = InProcessRun("revoked-mid-run", slots=3).run({"repositories": names, "batch_size": 2})
        assert revoked.is_set(), "the run ended before the token was revoked"
        assert out["commit"].state == "success", repr(out["commit"].error)
        rejected = {fp for o in out["slots"].values() if o.result for fp in o.result["rejected_tokens"]}
        fp = fingerprint(TOKENS[1])
        assert rejected == {fp}
        assert f"GitHub rejected token {fp}" in product_log.text
        assert "replace it in the github connection" in product_log.text
        assert not any(t in product_log.text for t in TOKENS)
        _check_exact(dataset, names, fresh_db[1])
        after = [e for e in srv.request_log() if e["token"] == "t1" and e["status"] == 401]
        figure(
            "token revoked mid-run", requests_with_revoked_token=len(after), named=fp, lost=0, duplicates=0
        )
        assert len(after) <= 3  # taken out of the pool at once, not retried


def test_every_token_revoked_fails_saying_so_and_is_not_complete(dataset, env, fresh_db, figure):
    import psycopg

    tokens = [TokenConfig(name=f"t{i}", token=TOKENS[i], collaborator_repos=("*",)) for i in range(2)]
    names = dataset.repo_names()
    with EmulatorServer(dataset, EmulatorConfig(tokens=tokens, latency_ms=5)) as srv:
        env(srv.url, TOKENS[:2])

        def revoke_after(n: int) -> None:
            while srv.stats()["requests"] < n:
                time.sleep(0.01)
            srv.set_faults(token_valid={"t0": False, "t1": False})

        threading.Thread(target=revoke_after, args=(10,), daemon=True).start()
        out = InProcessRun("all-revoked", slots=2).run({"repositories": names, "batch_size": 2})
        failed = [o for o in out["slots"].values() if o.state == "failed"]
        assert failed and all("rejected" in str(o.error) for o in failed), [repr(o.error) for o in failed]
        assert type(failed[0].error).__name__ == "AirflowFailException"  # no pointless retries
        assert out["commit"].state == "failed"
        assert "did not finish" in str(out["commit"].error)
        with psycopg.connect(fresh_db[1]) as c:
            status = c.execute("SELECT status FROM github_collect_run").fetchall()
        assert status == [("partial",)]
        figure("every token revoked", slot_error=str(failed[0].error)[:90], run_status=status[0][0])
