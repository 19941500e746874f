from __future__ import annotations

import json

import pytest

from github_collector.plan import (
    MAX_REPOS,
    InvalidInput,
    build_plan,
    default_repositories,
    normalise_repo,
    params_schema,
)

pytestmark = pytest.mark.unit
RELS = ["contributors", "forkers"]


def test_normalises_case_dedupes_and_strips_git_suffix():
    plan = build_plan(["Apache/Airflow", "apache/airflow", " apache/airflow.git ", "a/b"], RELS, 10)
    assert plan["repositories"] == ["apache/airflow", "a/b"]
    assert plan["batches"] == [["apache/airflow", "a/b"]]


def test_batches_split_by_size_and_keep_order():
    repos = [f"o/r{i}" for i in range(7)]
    plan = build_plan(repos, RELS, 3)
    assert plan["batches"] == [repos[0:3], repos[3:6], repos[6:7]]


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("not a repo", "not a repo"),
        ("a/b/c", "a/b/c"),
        ("; drop table", "; drop table"),
        ("../etc/passwd", "../etc/passwd"),
        ("owner/..", "owner/.."),
        ("-owner/x", "-owner/x"),
        ("owner--x/y", "owner--x/y"),
        ("ａpache/airflow", "ａpache/airflow"),  # fullwidth look-alike
        ("apache/airfl\u043ew", "airfl"),  # Cyrillic o
        ("", "''"),
        ("x" * 41 + "/y", "xxxx"),
        ("o/" + "n" * 150, "nnnn"),
        ("$(rm -rf /)/x", "$(rm -rf /)/x"),
    ],
)
def test_bad_repositories_are_refused_naming_the_value(value, named):
    with pytest.raises(InvalidInput) as err:
        build_plan([value], RELS, 10)
    assert named in str(err.value)


def test_non_string_repository():
    with pytest.raises(InvalidInput, match="42"):
        normalise_repo(42)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"relations": ["followers"]}, "followers"),
        ({"relations": []}, "[]"),
        ({"batch_size": 0}, "batch_size 0"),
        ({"batch_size": 501}, "batch_size 501"),
        ({"batch_size": True}, "batch_size True"),
        ({"batch_size": "10"}, "'10'"),
        ({"repositories": []}, "[]"),
        ({"repositories": "apache/airflow"}, "'apache/airflow'"),
        ({"full_refresh": "yes"}, "'yes'"),
    ],
)
def test_bad_parameters_are_refused_naming_the_value(kwargs, named):
    args = {"repositories": ["a/b"], "relations": RELS, "batch_size": 5, "full_refresh": False} | kwargs
    with pytest.raises(InvalidInput) as err:
        build_plan(**args)
    assert named in str(err.value)


def test_too_many_repositories():
    with pytest.raises(InvalidInput, match=str(MAX_REPOS + 1)):
        build_plan([f"o/r{i}" for i in range(MAX_REPOS + 1)], RELS, 10)


def test_schema_pattern_agrees_with_python_rules():
    import jsonschema

    schema = params_schema()["repositories"]
    for good in ["apache/airflow", "a/b", "o-k/x.y_z-1", "A1/.github"]:
        jsonschema.validate([good], schema)
        normalise_repo(good)
    for bad in ["not a repo", "a/b/c", "; drop table", "../x", "o/..", "-o/x", "ａ/b"]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate([bad], schema)
        with pytest.raises(InvalidInput):
            normalise_repo(bad)


def test_default_repositories_reads_include_file(tmp_path):
    f = tmp_path / "repos.json"
    f.write_text(json.dumps({"repositories": ["x/y", "z/w"]}))
    assert default_repositories(f) == ["x/y", "z/w"]
    assert default_repositories(tmp_path / "missing.json")  # falls back, never empty


def test_default_repositories_file_can_be_pointed_elsewhere(tmp_path, monkeypatch):
    f = tmp_path / "other.json"
    f.write_text(json.dumps(["emu/one"]))
    monkeypatch.setenv("GITHUB_REPO_USERS_REPOS_FILE", str(f))
    assert default_repositories() == ["emu/one"]
