"""The rows the product stores, built from GitHub's REST and GraphQL shapes.

GitHub spells the same profile two ways (REST ``blog`` is "" when unset, GraphQL
``websiteUrl`` is null; GraphQL ``email`` is "" when private). Both become one record with
empty text as None, so the two paths give identical rows.
"""

from __future__ import annotations

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
}


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v)
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
    return rec


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
    return rec


def link(repo_id: int, user_id: int, relation: str, **extra: Any) -> dict:
    return {"repo_id": int(repo_id), "user_id": int(user_id), "relation": RELATION_ROLE[relation], **extra}
