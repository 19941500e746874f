"""Metrics: the README's table and ``metrics.METRICS`` agree, and a run emits every name in them.

The run is in-process against the emulator with a quota so small that it runs out mid-batch,
so the deferral counter is exercised too. ``Stats`` is replaced by a recorder: what a
deployment's StatsD or OpenTelemetry would have received is what the recorder holds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fault_harness import InProcessRun, conn_env, recording_sleep

from github_collector import metrics
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset

pytestmark = pytest.mark.faults
TOKEN = "metrics-token-5d1e90c4"
README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_metrics() -> dict[str, str]:
    section = README.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \|", section, flags=re.M)
    return {name: kind for name, kind in rows}


def test_readme_table_is_the_metrics_constant():
    documented = _readme_metrics()
    assert documented, "no metrics table under '## Metrics' in the README"
    assert documented == {f"{metrics.PREFIX}.{n}": k for n, k in metrics.METRICS.items()}


def test_an_undocumented_name_is_refused():
    with pytest.raises(KeyError):
        metrics.incr("not_a_documented_metric")
    with pytest.raises(KeyError):
        metrics.incr("commit_rows.<kind>")  # a part left unfilled


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float, dict]] = []

    def incr(self, stat, count=1, rate=1, *, tags=None):
        self.sent.append(("counter", stat, count, dict(tags or {})))

    def gauge(self, stat, value, rate=1, delta=False, *, tags=None):
        self.sent.append(("gauge", stat, value, dict(tags or {})))


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"<[a-z]+>", template)
    return re.compile(r"[A-Za-z0-9_-]+".join(re.escape(p) for p in parts) + r"\Z")


def test_a_run_emits_every_documented_metric(monkeypatch, fresh_db, key_prefix):
    recorder = _Recorder()
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)
    monkeypatch.setattr("github_collector.client.time.sleep", recording_sleep)
    dataset = build_dataset(DatasetSpec(seed=7, n_repos=3, n_users=200, max_per_repo=120))
    # A quota smaller than the run needs, in 3 s windows: the fetch defers and resumes.
    token = TokenConfig(name="m", token=TOKEN, core_limit=4, graphql_limit=2, collaborator_repos=("*",))
    with EmulatorServer(dataset, EmulatorConfig(tokens=[token], window_seconds=3)) as srv:
        values = conn_env(
            github_url=srv.url,
            tokens=[TOKEN],
            pg_db=fresh_db[0],
            prefix=key_prefix,
            github_extra={"max_inline_wait": 0, "reserve": 0},
        )
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        out = InProcessRun("metrics-run", slots=2).run(
            {"repositories": dataset.repo_names(), "batch_size": 2}
        )
    assert out["commit"].state == "success", (
        repr(out["commit"].error),
        {s: repr(o.error) for s, o in out["slots"].items()},
    )
    assert any(o.deferrals for o in out["slots"].values()), "the quota never ran out: deferrals untested"

    names = {name for _, name, _, _ in recorder.sent}
    for template, kind in metrics.METRICS.items():
        pattern = _pattern(f"{metrics.PREFIX}.{template}")
        hits = [(k, n) for k, n, _, _ in recorder.sent if pattern.match(n)]
        assert hits, f"documented metric {template} was not emitted; emitted: {sorted(names)}"
        assert {k for k, _ in hits} == {kind}, (template, hits[:3])
    deferrals = sum(v for _, n, v, _ in recorder.sent if n == f"{metrics.PREFIX}.deferrals")
    assert deferrals >= 1
    assert sum(v for _, n, v, _ in recorder.sent if n == f"{metrics.PREFIX}.requests") > 0
    # No token in a name or a tag: only account keys and fingerprints.
    assert TOKEN not in repr(recorder.sent)
