"""Synthetic dataset: determinism, variety, special repos, mutations, ground truth shape."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from fixtures_emulator import *  # noqa: F403

from github_emulator import (
    PRESETS,
    RENAMED_REPO_NEW_NAME,
    SPECIAL_REPOS,
    DatasetSpec,
    build_dataset,
    decode_node_id,
    node_id,
)
from github_emulator.encoding import decode_cursor, encode_cursor

pytestmark = pytest.mark.unit

SPEC = DatasetSpec(seed=3, n_repos=12, n_users=800, max_per_repo=300)
ALL = ("*",)


def test_same_seed_same_dataset_other_seed_differs() -> None:
    a, b = build_dataset(SPEC), build_dataset(SPEC)
    assert a.repo_names() == b.repo_names()
    assert a.truth(collaborator_repos=ALL) == b.truth(collaborator_repos=ALL)
    c = build_dataset(DatasetSpec(seed=4, n_repos=12, n_users=800, max_per_repo=300))
    assert c.truth(collaborator_repos=ALL) != a.truth(collaborator_repos=ALL)


def test_special_repos_are_present(emu_dataset) -> None:
    names = emu_dataset.repo_names()
    assert set(SPECIAL_REPOS.values()) <= set(names)
    truth = emu_dataset.truth(collaborator_repos=ALL)["repos"]
    assert truth[SPECIAL_REPOS["renamed"]]["status"] == "moved"
    assert truth[SPECIAL_REPOS["renamed"]]["full_name"] == RENAMED_REPO_NEW_NAME
    assert truth[SPECIAL_REPOS["missing"]] == {
        "repo_id": None,
        "full_name": None,
        "status": "not_found",
        "restricted": [],
    }
    assert truth[SPECIAL_REPOS["blocked"]]["status"] == "blocked"
    assert truth[SPECIAL_REPOS["tos"]] == {
        "repo_id": None,
        "full_name": None,
        "status": "blocked",
        "restricted": [],
    }
    assert truth[SPECIAL_REPOS["empty"]]["status"] == "empty"
    assert truth[SPECIAL_REPOS["too_large"]]["status"] == "too_large"
    forms = {
        emu_dataset.lookup_full_name(SPECIAL_REPOS[k])[0].restriction
        for k in ("restricted_404", "restricted_403", "restricted_empty")
    }
    assert forms == {"404", "403", "empty"}


def test_profiles_have_the_variety_collectors_must_survive(emu_dataset) -> None:
    users = emu_dataset.truth(collaborator_repos=ALL)["users"]
    types = Counter(u["type"] for u in users.values())
    assert types["User"] > 100 and types["Organization"] >= 1 and types["Bot"] >= 1
    logins = [u["login"] for u in users.values()]
    assert len({lg.lower() for lg in logins}) == len(logins)  # unique case-insensitively
    assert any(lg.endswith("[bot]") for lg in logins)
    text = " ".join(str(u[k]) for u in users.values() for k in ("name", "bio", "location", "company"))
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)  # CJK
    assert any(ord(ch) >= 0x1F300 for ch in text)  # emoji
    assert "é" in text or "ë" in text
    assert any(u["email"] is None for u in users.values()) and any(u["email"] for u in users.values())
    assert any(u["blog"] == "" for u in users.values()) and any(u["blog"] for u in users.values())
    assert any(u["name"] is None for u in users.values())
    for u in users.values():
        assert u["created_at"].endswith("Z") and u["created_at"] <= u["updated_at"]
        assert u["node_id"].startswith({"User": "U_", "Organization": "O_", "Bot": "BOT_"}[u["type"]])


def test_relations_overlap_and_sizes_are_heavy_tailed(emu_dataset) -> None:
    truth = emu_dataset.truth(collaborator_repos=ALL)
    per_user_repos = Counter(u for _, u in truth["repo_users"])
    assert max(per_user_repos.values()) >= 3  # some users sit in several repos
    multi = [e for e in truth["repo_users"].values() if len(e["relations"]) > 1]
    assert multi  # and in several relations of one repo
    forker_types = {
        truth["users"][u]["type"] for (_, u), e in truth["repo_users"].items() if "forkers" in e["relations"]
    }
    assert "Organization" in forker_types
    contributor_types = {
        truth["users"][u]["type"]
        for (_, u), e in truth["repo_users"].items()
        if "contributors" in e["relations"]
    }
    assert "Bot" in contributor_types
    stars = sorted(len(emu_dataset.lookup_full_name(n)[0].stars) for n in emu_dataset.repo_names()[:10])
    assert stars[0] == 0 and stars[-1] > 5 * stars[len(stars) // 2]


def test_logins_and_node_ids_round_trip(emu_dataset) -> None:
    for uid in list(emu_dataset.truth(collaborator_repos=ALL)["users"])[:200]:
        login = emu_dataset.login(uid)
        assert emu_dataset.user_id(login) == uid
        assert emu_dataset.user_id(login.upper()) == uid
        typename = emu_dataset.user_type(uid)
        assert decode_node_id(node_id(typename, uid)) == (typename, uid)
    assert emu_dataset.user_id("no-such-user-zz") is None
    assert node_id("User", 1) == "U_kgDOAAAAAQ"  # GitHub's format for id 1
    assert decode_node_id("garbage") is None and decode_node_id("U_!!!") is None
    assert decode_cursor(encode_cursor((1700000000, 42))) == (1700000000, 42)
    assert decode_cursor("bm90IGEgY3Vyc29y") is None


def test_truth_respects_token_restrictions(emu_dataset) -> None:
    full = emu_dataset.truth(collaborator_repos=ALL)
    some = emu_dataset.repo_names()[0]
    hidden = emu_dataset.truth(collaborator_repos=(some,))
    assert full["repos"][some]["restricted"] == [] == hidden["repos"][some]["restricted"]
    other = emu_dataset.repo_names()[1]
    assert hidden["repos"][other]["restricted"] == ["stargazers", "watchers"]
    rid = hidden["repos"][other]["repo_id"]
    rels = {r for (repo_id, _), e in hidden["repo_users"].items() if repo_id == rid for r in e["relations"]}
    assert not rels & {"stargazers", "watchers"}
    only = emu_dataset.truth(relations=("forkers",), collaborator_repos=ALL)
    assert all(e["relations"] == {"forkers"} for e in only["repo_users"].values())
    with pytest.raises(ValueError, match="unknown relations"):
        emu_dataset.truth(relations=("followers",))


def test_truth_excludes_what_github_cannot_list(emu_dataset) -> None:
    truth = emu_dataset.truth(collaborator_repos=ALL)
    too_large = emu_dataset.lookup_full_name(SPECIAL_REPOS["too_large"])[0]
    assert too_large.contributors  # it has them, GitHub just won't list them
    entries = [e for (r, _), e in truth["repo_users"].items() if r == too_large.id]
    assert entries and not any("contributors" in e["relations"] for e in entries)
    empty_id = truth["repos"][SPECIAL_REPOS["empty"]]["repo_id"]
    assert not [k for k in truth["repo_users"] if k[0] == empty_id]


def test_mutations(emu_fresh_dataset) -> None:
    ds = emu_fresh_dataset
    name = ds.repo_names()[0]
    repo = ds.lookup_full_name(name)[0]
    before = (len(repo.forks), len(repo.stars), len(repo.watchers), len(repo.contributors))
    forks = ds.add_forks(name, 3)
    new_stars = ds.add_stargazers(name, 4)
    ds.add_watchers(name, 2)
    ds.add_contributors(name, 5)
    assert (len(repo.forks), len(repo.stars), len(repo.watchers), len(repo.contributors)) == (
        before[0] + 3,
        before[1] + 4,
        before[2] + 2,
        before[3] + 5,
    )
    assert all(ds.lookup_full_name(f)[0] is not None for f in forks)
    assert [u for _, u in repo.stars[-4:]] == new_stars  # newest stars sort last
    assert len({u for _, u in repo.stars}) == len(repo.stars)

    login = ds.login(new_stars[0])
    old = ds.truth(collaborator_repos=ALL)["users"][new_stars[0]]
    touched = ds.touch_user(login)
    assert touched["updated_at"] > old["updated_at"] and touched["created_at"] == old["created_at"]
    new = ds.truth(collaborator_repos=ALL)["users"][new_stars[0]]
    assert new != old and new["login"] == old["login"]

    ds.rename_repo(name, "someone-new/renamed-again")
    assert ds.lookup_full_name("someone-new/renamed-again")[0] is repo
    assert ds.lookup_full_name(name) == (repo, True)
    assert ds.truth(collaborator_repos=ALL)["repos"][name]["status"] == "moved"
    with pytest.raises(KeyError):
        ds.add_forks("nobody/nothing", 1)
    with pytest.raises(ValueError, match="unknown op"):
        ds.mutate("drop_tables")


def test_large_dataset_builds_fast() -> None:
    start = time.perf_counter()
    ds = build_dataset(PRESETS["bench"])
    built = time.perf_counter() - start
    assert ds.n_persons > 80_000
    assert built < 5
    start = time.perf_counter()
    for uid in range(3_000_000, 3_002_000):
        ds.profile(uid)
    assert time.perf_counter() - start < 2  # profiles are generated lazily and cheaply
