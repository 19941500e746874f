"""The run summary (`make demo` prints it) explains its figures from what a real committed run
stored: how pairs, relations and users add up, and why each list that is not complete is so."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from e2e_harness import read_back
from fault_harness import InProcessRun, failures, set_connections

from github_collector.summary import summary_lines
from github_emulator import DatasetSpec, EmulatorConfig, EmulatorServer, TokenConfig, build_dataset
from github_emulator.data import SPECIAL_REPOS

pytestmark = pytest.mark.integration
TOKEN = "demo-summary-token-3f90a1"

# What each recorded outcome must be explained with (a word of the reason, not the status).
REASON_WORDS = {
    "restricted": "admins and collaborators",
    "too_large": "too large for GitHub to list",
    "partial": "would not serve",
    "unavailable": "kept failing",
    "not_found": "404",
    "blocked": "blocked by GitHub",
}


@pytest.fixture()
def committed(fresh_db, key_prefix, monkeypatch):
    """A committed run over ordinary and special repositories (gone, blocked, too large,
    restricted lists), with a token that collaborates on one ordinary repository only."""
    dataset = build_dataset(DatasetSpec(seed=23, n_repos=3, n_users=250, max_per_repo=90))
    names = dataset.repo_names()
    ordinary = [n for n in names if not n.startswith("emulator-fixtures/")]
    cfg = EmulatorConfig(tokens=[TokenConfig(name="t", token=TOKEN, collaborator_repos=(ordinary[0],))])
    with EmulatorServer(dataset, cfg) as srv:
        set_connections(monkeypatch, github_url=srv.url, tokens=[TOKEN], pg_db=fresh_db[0], prefix=key_prefix)
        out = InProcessRun(f"sum-{uuid.uuid4().hex[:6]}", slots=2).run(
            {"repositories": names, "batch_size": 4}, concurrent=False
        )
    assert out["commit"].state == "success", failures(out)
    return fresh_db[1]


def test_summary_explains_pairs_relations_users_and_every_incomplete_list(committed):
    dsn = committed
    with psycopg.connect(dsn) as conn:
        lines = summary_lines(conn)
    text = "\n".join(lines)
    users, links, repos = read_back(dsn)

    # Pairs, relations and users add up as the stored rows do.
    roles: dict[tuple[int, int], set[str]] = {}
    for rid, uid, role in links:
        roles.setdefault((rid, uid), set()).add(role)
    pairs, relations = len(roles), len(links)
    multi = sum(1 for r in roles.values() if len(r) > 1)
    assert multi > 0, "the dataset must hold pairs with several relations for this test to mean anything"
    assert f"(repo, user) pairs     : {pairs:,}: a pair is one user tied to one repository" in text
    assert f"relations              : {relations:,} (" in text
    assert f") = {pairs:,} pairs + {relations - pairs:,}, as {multi:,} pair(s) hold more than one" in text
    for role in ("contributor", "forker", "stargazer", "watcher"):
        assert f"{role}={sum(1 for _, _, r in links if r == role):,}" in text
    tied = len({uid for _, uid, _ in links})
    assert f"{tied:,} user(s) in {pairs:,} pairs" in text
    assert f"users                  : {len(users):,} stored (" in text

    # Every list not complete has its line, naming the repository and the list, with its reason.
    expected: list[tuple[str, str, str]] = []
    for requested, rec in repos.items():
        if rec["status"] not in ("ok", "moved"):
            expected.append((requested, "every list", rec["status"]))
    for rec in {r["full_name"]: r for r in repos.values() if r["full_name"]}.values():
        if rec["status"] in ("ok", "moved"):
            expected += [
                (rec["full_name"], rel, rec["relation_status"][rel]) for rel in rec["unavailable_relations"]
            ]
    listed = [line for line in lines if line.startswith("  ")]
    assert f"lists not complete     : {len(expected):,} (" in text
    assert len(listed) == len(expected), "\n".join(listed)
    for repo, what, status in expected:
        hits = [line for line in listed if line.startswith(f"  {repo} {what}: ")]
        assert len(hits) == 1, (repo, what, listed)
        assert REASON_WORDS[status] in hits[0], hits[0]

    # The emulator's special repositories are among them, each for its own reason.
    def reason(repo: str, what: str) -> str:
        return next(line for line in listed if line.startswith(f"  {repo} {what}: "))

    assert "404" in reason(SPECIAL_REPOS["missing"], "every list")
    assert "451, unavailable for legal reasons" in reason(SPECIAL_REPOS["blocked"], "every list")
    assert "HTTP 451" in reason(SPECIAL_REPOS["blocked"], "every list")  # GitHub's answer, as stored
    assert "403, a terms-of-service block" in reason(SPECIAL_REPOS["tos"], "every list")
    assert "too large" in reason(SPECIAL_REPOS["too_large"], "contributors")
    hidden = reason(SPECIAL_REPOS["restricted_404"], "stargazers")
    assert "admins and collaborators" in hidden
    assert f"GitHub counts {repos[SPECIAL_REPOS['restricted_404']]['stargazer_count']:,}" in hidden
