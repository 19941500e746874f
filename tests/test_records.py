"""Records are built with text Postgres accepts, whichever GitHub API they come from, and a
repository record names the relations this run listed in full."""

from __future__ import annotations

import json

import pytest

from github_collector.collector import new_batch_state, repo_record
from github_collector.records import link, user_from_graphql, user_from_rest

pytestmark = pytest.mark.unit
NUL, LONE_HIGH, LONE_LOW, REPLACEMENT = "\x00", "\ud800", "\udc00", "\ufffd"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (f"Zo{NUL}ë", "Zoë"),
        (f"a{LONE_HIGH}b", f"a{REPLACEMENT}b"),
        (f"{LONE_LOW}end", f"{REPLACEMENT}end"),
        ("\ud83d\ude00 pair split in two code points", "😀 pair split in two code points"),
        ("plain 李 🚀", "plain 李 🚀"),
    ],
)
def test_clean_text(raw, stored):
    from github_collector.records import clean_text

    assert clean_text(raw) == stored


def unstorable(value: object) -> bool:
    """Whether the JSON staging writes for ``value`` holds what Postgres jsonb refuses."""
    text = json.dumps(value)
    return "\\u0000" in text or any(f"\\u{c:04x}" in text for c in range(0xD800, 0xE000))


def test_a_graphql_profile_is_cleaned():
    node = {
        "__typename": "User",
        "databaseId": 7,
        "id": "U_7",
        "login": "ann",
        "name": f"Ann{NUL}",
        "company": f"Acme {LONE_HIGH}",
        "bio": f"{NUL}",
        "location": f"x{LONE_LOW}",
        "websiteUrl": None,
        "twitterUsername": None,
        "email": "",
        "createdAt": "2020-01-01T00:00:00Z",
        "updatedAt": "2021-01-01T00:00:00Z",
    }
    rec = user_from_graphql(node)
    assert (rec["name"], rec["company"], rec["bio"], rec["location"]) == (
        "Ann",
        f"Acme {REPLACEMENT}",
        None,  # nothing but NUL: empty, so None as every empty text
        f"x{REPLACEMENT}",
    )
    assert not unstorable(rec)


def test_a_rest_profile_and_a_list_item_are_cleaned():
    full = {
        "id": 8,
        "node_id": "U_8",
        "login": f"bob{NUL}",
        "type": "User",
        "name": f"Bob {LONE_HIGH}",
        "company": None,
        "blog": f"https://b{NUL}.dev",
        "location": None,
        "email": None,
        "bio": f"{LONE_LOW}{LONE_LOW}",
        "twitter_username": None,
        "public_repos": 1,
        "followers": 2,
        "following": 3,
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2021-01-01T00:00:00Z",
    }
    rec = user_from_rest(full)
    assert (rec["login"], rec["name"], rec["blog"], rec["bio"]) == (
        "bob",
        f"Bob {REPLACEMENT}",
        "https://b.dev",
        REPLACEMENT * 2,
    )
    item = user_from_rest({"id": 9, "login": f"c{LONE_HIGH}", "type": "User"})
    assert item["login"] == f"c{REPLACEMENT}" and not unstorable([rec, item])


def test_a_link_and_a_repo_record_are_cleaned():
    lk = link(1, 2, "stargazers", starred_at=f"2024-01-01T00:00:00Z{NUL}")
    assert lk["starred_at"] == "2024-01-01T00:00:00Z"
    state = new_batch_state(["o/r"], ["contributors"])
    repo = state["repos"]["o/r"]
    repo.update(repo_id=1, full_name="o/r", status="ok", detail=f"HTTP 404: gone {LONE_HIGH}{NUL}")
    rec = repo_record(repo)
    assert rec["detail"] == f"HTTP 404: gone {REPLACEMENT}" and not unstorable(rec)


def test_repo_record_names_the_relations_listed_in_full():
    rels = ["contributors", "forkers", "stargazers", "watchers"]
    repo = new_batch_state(["o/r"], rels)["repos"]["o/r"]
    streams = repo["streams"]
    streams["contributors"].update(done=True, status="ok", cursor=None)  # no next link: every page read
    streams["forkers"].update(
        done=True, status="ok", cursor="c3", stop_at="2024-01-01T00:00:00Z"
    )  # newest first only
    streams["stargazers"].update(done=True, status="empty")  # a count of 0: nobody stars it
    streams["watchers"].update(done=False, status=None)  # not finished
    assert repo_record(repo)["listed_complete"] == ["contributors", "stargazers"]
    streams["watchers"].update(done=True, status="restricted")
    streams["stargazers"].update(status="unchanged")  # skipped: nothing was listed
    assert repo_record(repo)["listed_complete"] == ["contributors"]
    streams["forkers"].update(stop_at=None)  # read in full, ending on a page with items
    assert repo_record(repo)["listed_complete"] == ["contributors", "forkers"]


def test_a_list_cut_short_is_not_taken_as_listed_in_full():
    repo = new_batch_state(["o/r"], ["contributors", "stargazers"])["repos"]["o/r"]
    # Page 2 of a hidden list, sent with a token it is hidden from: no items, no next page.
    repo["streams"]["stargazers"].update(done=True, status="ok", cursor=None, pages=2)
    # A link header looping back to a page already read.
    repo["streams"]["contributors"].update(done=True, status="ok", cursor="/repos/o/r/contributors?page=2")
    assert repo_record(repo)["listed_complete"] == []
