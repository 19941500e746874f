from __future__ import annotations

import json

import pytest

from github_collector.plan import (
    BATCH_MAX,
    BATCH_MIN,
    MAX_REPOS,
    InvalidInput,
    RepositoriesFileError,
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


def test_default_repositories_come_from_the_package():
    """The list ships inside the package (importlib.resources), as a wheel installs it."""
    from importlib import resources

    packaged = json.loads((resources.files("github_collector") / "repositories.json").read_text())
    assert default_repositories() == packaged["repositories"]
    assert len(default_repositories()) >= 1


def test_default_repositories_file_can_be_pointed_elsewhere(tmp_path, monkeypatch):
    f = tmp_path / "other.json"
    f.write_text(json.dumps(["emu/one"]))
    monkeypatch.setenv("GITHUB_REPO_USERS_REPOS_FILE", str(f))
    assert default_repositories() == ["emu/one"]
    f.write_text(json.dumps({"repositories": ["x/y", " z/w "]}))
    assert default_repositories() == ["x/y", "z/w"]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot be read"),
        ("{not json", "is not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('{"repos": ["a/b"]}', "non-empty JSON list"),
        ('"apache/airflow"', "non-empty JSON list"),
        ('["apache/airflow", "not a repo"]', "'not a repo'"),
        ('["apache/airflow", 42]', "42"),
    ],
)
def test_a_missing_or_malformed_list_is_an_error_naming_the_file(tmp_path, monkeypatch, content, said):
    f = tmp_path / "repos.json"
    if content is not None:
        f.write_text(content)
    monkeypatch.setenv("GITHUB_REPO_USERS_REPOS_FILE", str(f))
    with pytest.raises(RepositoriesFileError) as err:
        default_repositories()
    assert str(f) in str(err.value) and "GITHUB_REPO_USERS_REPOS_FILE" in str(err.value)
    assert said in str(err.value)


def test_params_schema_carries_a_title_and_description_stating_each_rule():
    schema = params_schema()
    for name, spec in schema.items():
        assert spec["title"] and len(spec["description"]) > 40, name
    assert f"{BATCH_MIN} to {BATCH_MAX}" in schema["batch_size"]["title"]
    assert f"from {BATCH_MIN} to {BATCH_MAX}" in schema["batch_size"]["description"]
    assert f"{MAX_REPOS:,} repositories" in schema["repositories"]["description"]
    for relation in schema["relations"]["items"]["enum"]:
        assert relation in schema["relations"]["description"]


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (50, True), (500, True), (501, False)])
def test_batch_size_bounds_are_checked_but_not_given_to_the_number_input(value, ok):
    """Airflow 3's number input clamps a typed value into a top-level minimum/maximum on blur
    (0 silently became 1); under allOf the bounds are still validated when the run is triggered."""
    import jsonschema

    schema = params_schema()["batch_size"]
    assert "minimum" not in schema and "maximum" not in schema
    if ok:
        jsonschema.validate(value, schema)
    else:
        with pytest.raises(jsonschema.ValidationError) as err:
            jsonschema.validate(value, schema)
        assert err.value.message.startswith(f"{value} is ")


@pytest.mark.parametrize(
    ("value", "ok"),
    [(-1, False), (0, True), (200, True), (100_000, True), (100_001, False), ("5", False), (True, False)],
)
def test_max_author_pages_is_checked_before_anything_else(value, ok):
    from github_collector.plan import InvalidInput

    if ok:
        assert build_plan(["a/b"], ["issue_authors"], 10, False, value)["max_author_pages"] == value
    else:
        with pytest.raises(InvalidInput, match="max_author_pages"):
            build_plan(["a/b"], ["issue_authors"], 10, False, value)
