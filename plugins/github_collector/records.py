"""The rows the product stores, built from GitHub's REST and GraphQL shapes.

GitHub spells the same profile two ways (REST ``blog`` is "" when unset, GraphQL
``websiteUrl`` is null; GraphQL ``email`` is "" when private). Both become one record with
empty text as None, so the two paths give identical rows.

Every string a record carries is cleaned here, where records are built, so both paths and
every later stage see text Postgres accepts: NUL is removed (``text`` and ``jsonb`` refuse it,
SQLSTATE 22P05) and a lone UTF-16 surrogate becomes U+FFFD (``jsonb`` refuses it, 22P02).
One such profile field would otherwise reject the whole commit chunk it lands in.
"""

from __future__ import annotations

import re
from typing import Any

USER_FIELDS = (
    "user_id",
    "node_id",
    "login",
    "type",
    "name",
    "company",
    "blog",
    "location",
    "email",
    "bio",
    "twitter_username",
    "public_repos",
    "followers",
    "following",
    "created_at",
    "updated_at",
)

# contributor/forker/... are the relation names stored in github_repo_user.relations.
RELATION_ROLE = {
    "contributors": "contributor",
    "forkers": "forker",
    "stargazers": "stargazer",
    "watchers": "watcher",
    "issue_authors": "issue_author",
    "pull_request_authors": "pull_request_author",
    "discussion_authors": "discussion_author",
}


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(s: str) -> str:
    """``s`` without NUL, and with each lone surrogate replaced by U+FFFD."""
    if not _UNSTORABLE.search(s):
        return s
    s = s.replace("\x00", "")
    # Through UTF-16: a pair held as two code points becomes its character, a lone half U+FFFD.
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean(value: Any) -> Any:
    """``value`` with every string in it (nested in dicts and lists too) cleaned."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def _cleaned(rec: dict[str, Any]) -> dict[str, Any]:
    """A flat record with its string values cleaned (keys are ours, values are GitHub's)."""
    for k, v in rec.items():
        if isinstance(v, str):
            rec[k] = clean_text(v)
    return rec


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = clean_text(str(v))
    return s if s.strip() else None


def _count(conn: Any) -> int | None:
    return int(conn["totalCount"]) if isinstance(conn, dict) and conn.get("totalCount") is not None else None


def user_from_graphql(node: dict) -> dict | None:
    """A full profile from a User, Organization or Bot node; None for a node we cannot key."""
    if not node or node.get("databaseId") is None:
        return None
    kind = node.get("__typename") or "User"
    rec: dict[str, Any] = dict.fromkeys(USER_FIELDS)
    rec.update(
        user_id=int(node["databaseId"]),
        node_id=node.get("id"),
        login=node.get("login"),
        type=kind,
        created_at=node.get("createdAt"),
        updated_at=node.get("updatedAt"),
        profile_complete=True,
        email_known=True,
    )
    if kind == "User":
        rec.update(
            name=_text(node.get("name")),
            company=_text(node.get("company")),
            blog=_text(node.get("websiteUrl")),
            location=_text(node.get("location")),
            bio=_text(node.get("bio")),
            twitter_username=_text(node.get("twitterUsername")),
            public_repos=_count(node.get("repositories")),
            followers=_count(node.get("followers")),
            following=_count(node.get("following")),
        )
        if "email" in node:
            rec["email"] = _text(node["email"])
        else:  # the token lacks the scope: unknown, which is not the same as "none"
            rec["email_known"] = False
    elif kind == "Organization":
        rec.update(
            name=_text(node.get("name")),
            blog=_text(node.get("websiteUrl")),
            location=_text(node.get("location")),
            email=_text(node.get("orgEmail")),
            bio=_text(node.get("description")),
            twitter_username=_text(node.get("twitterUsername")),
            public_repos=_count(node.get("repositories")),
        )
    return _cleaned(rec)


def user_from_identity(node: dict, *, gone: bool = False) -> dict | None:
    """Who an account is, without its profile: what a SAML-protected organisation still
    answers, or the list item of an account GitHub no longer serves (``gone``)."""
    uid = node.get("databaseId", node.get("id") if isinstance(node.get("id"), int) else None)
    if uid is None or not node.get("login"):
        return None
    rec: dict[str, Any] = dict.fromkeys(USER_FIELDS)
    rec.update(
        user_id=int(uid),
        node_id=node.get("node_id") or (node.get("id") if isinstance(node.get("id"), str) else None),
        login=node["login"],
        type=node.get("__typename") or node.get("type") or "User",
        profile_complete=False,
        email_known=False,
    )
    if gone:
        rec["gone"] = True
    return _cleaned(rec)


def user_from_rest(item: dict) -> dict:
    """A user from a REST object: a list item (no profile) or a full /users/{login} body."""
    rec: dict[str, Any] = dict.fromkeys(USER_FIELDS)
    full = "created_at" in item
    rec.update(
        user_id=int(item["id"]),
        node_id=item.get("node_id"),
        login=item.get("login"),
        type=item.get("type") or "User",
        profile_complete=full,
        email_known=full,
    )
    if full:
        for f in ("name", "company", "blog", "location", "email", "bio", "twitter_username"):
            rec[f] = _text(item.get(f))
        for f in ("public_repos", "followers", "following"):
            rec[f] = item.get(f)
        rec["created_at"] = item.get("created_at")
        rec["updated_at"] = item.get("updated_at")
        if rec["type"] == "Bot":  # GraphQL exposes none of these for bots; keep both paths equal
            for f in ("name", "company", "blog", "location", "email", "bio", "twitter_username"):
                rec[f] = None
            for f in ("public_repos", "followers", "following"):
                rec[f] = None
        elif rec["type"] == "Organization":
            rec["company"] = None
            rec["followers"] = rec["following"] = None
    return _cleaned(rec)


def link(repo_id: int, user_id: int, relation: str, **extra: Any) -> dict:
    rec = {"repo_id": int(repo_id), "user_id": int(user_id), "relation": RELATION_ROLE[relation], **extra}
    return _cleaned(rec)


def authored_item(repo_id: int, relation: str, item: dict, author: dict | None) -> dict:
    """One issue, pull request or discussion and who opened it. Staged with the links (keyed
    by the item's number, not a user), so reading an item again replaces it. ``author`` is the
    user record of a User or Bot author; any other author (a Mannequin, an
    EnterpriseUserAccount) is kept by type and login only, and a deleted account (``author``
    null on GitHub) by neither: such items are counted on the repository, never as a user."""
    actor = item.get("author") or {}
    rec = {
        "repo_id": int(repo_id),
        "relation": RELATION_ROLE[relation],
        "number": int(item["number"]),
        "created_at": item.get("createdAt"),
        "author_id": author["user_id"] if author else None,
        "author_type": actor.get("__typename") if actor else None,
        "author_login": actor.get("login") if actor else None,
    }
    return _cleaned(rec)
