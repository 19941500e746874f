"""What the collected data in Postgres amounts to, in sentences a person reads after a run.

Built from what the commit recorded, never from assumptions: the counts come from the tables,
and every list that is not complete is explained from its repository's row (status and
``relation_status`` per list) and the request's ``detail``, which holds GitHub's own message.
``make demo`` prints it; a test builds it from a real committed run.

Three figures are easy to confuse. A *relation* is one fact (this user starred that repository);
a *(repo, user) pair* is one user tied to one repository by one relation or more (who both forked
and starred is one pair, two relations); a *user* is one account, tied to any number of
repositories.
"""

from __future__ import annotations

from typing import Any

from github_collector.collector import (
    BLOCKED,
    ERROR,
    MOVED,
    NOT_FOUND,
    OK,
    PENDING,
    REL_PARTIAL,
    REL_RESTRICTED,
    REL_TOO_LARGE,
    REL_UNAVAILABLE,
)
from github_collector.queries import RELATIONS

# Why a whole repository gave no list, by github_repo_request.status.
REPO_REASON = {
    NOT_FOUND: "repository gone: GitHub answers 404 (deleted, made private, or never existed)",
    BLOCKED: "repository blocked by GitHub",
    ERROR: "GitHub's answer about the repository could not be used",
    PENDING: "not read: its batch did not finish",
}
# Why one list of a repository is not complete, by relation_status.
LIST_REASON = {
    REL_RESTRICTED: "restricted: GitHub shows this list only to the repository's admins and "
    "collaborators, and no configured token is one",
    REL_TOO_LARGE: "too large for GitHub to list: it answers 403 'too large' for the contributors "
    "of a repository with this much history",
    REL_PARTIAL: "incomplete: read to its end, but GitHub would not serve some of its items",
    REL_UNAVAILABLE: "not available: GitHub kept failing on it",
}
COUNT_COLUMN = {"stargazers": "stargazer_count", "watchers": "watcher_count", "forkers": "fork_count"}


def _rows(conn: Any, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def _detail_for(detail: str | None, rel: str | None) -> str | None:
    """The request's detail if it is about ``rel`` (or, for ``None``, about the repository):
    details about one list start with its name, as the collector writes them."""
    if not detail:
        return None
    about = next((r for r in RELATIONS if detail.startswith(f"{r}:")), None)
    return detail if about is None or about == rel else None


def _with_detail(reason: str, detail: str | None) -> str:
    return f'{reason} (GitHub said: "{detail}")' if detail else reason


def incomplete_lists(conn: Any) -> list[dict]:
    """Every list of the stored repositories that is not complete, with why: a dict per list
    (``repo``, ``relation`` or None for every list of a repository GitHub did not give,
    ``status`` as recorded, ``reason``)."""
    out: list[dict] = []
    requests = _rows(
        conn,
        "SELECT requested_name, status, detail, repo_id FROM github_repo_request ORDER BY requested_name",
    )
    detail_of: dict[int, str] = {}
    for name, status, detail, repo_id in requests:
        if repo_id is not None and detail:
            detail_of.setdefault(repo_id, detail)
        if status in (OK, MOVED):
            continue
        # A repository stored before and gone now keeps its row (status updated): reported here
        # once, under the name asked for.
        reason = REPO_REASON.get(status, f"recorded as {status!r}")
        if status == BLOCKED and detail:  # which block, from GitHub's answer as the collector kept it
            if detail.startswith("HTTP 451"):
                reason += ": 451, unavailable for legal reasons (a takedown)"
            elif detail.startswith("HTTP 403"):
                reason += ": 403, a terms-of-service block"
        out.append(
            {
                "repo": name,
                "relation": None,
                "status": status,
                "reason": _with_detail(reason, _detail_for(detail, None)),
            }
        )
    repos = _rows(
        conn,
        "SELECT repo_id, full_name, status, unavailable_relations, relation_status, stargazer_count,"
        " watcher_count, fork_count FROM github_repository"
        " WHERE cardinality(unavailable_relations) > 0 ORDER BY full_name",
    )
    for repo_id, full_name, status, unavailable, rel_status, stars, watchers, forks in repos:
        if status not in (OK, MOVED):
            continue  # gone or blocked now: the request's line says so for every list
        counts = {"stargazer_count": stars, "watcher_count": watchers, "fork_count": forks}
        for rel in unavailable:
            recorded = (rel_status or {}).get(rel, REL_UNAVAILABLE)
            reason = LIST_REASON.get(recorded, f"recorded as {recorded!r}")
            known = counts.get(COUNT_COLUMN.get(rel, ""))
            if recorded == REL_RESTRICTED and known:
                reason += f" (GitHub counts {known:,})"
            if recorded != REL_RESTRICTED:
                reason = _with_detail(reason, _detail_for(detail_of.get(repo_id), rel))
            out.append({"repo": full_name, "relation": rel, "status": recorded, "reason": reason})
    return out


def summary_lines(conn: Any) -> list[str]:
    """The run's summary from Postgres: repositories, users, pairs and relations (and how they
    add up), and a line per list that is not complete saying why."""
    requests = _rows(conn, "SELECT status, count(*) FROM github_repo_request GROUP BY status ORDER BY status")
    users = _rows(conn, "SELECT type, count(*) FROM github_user GROUP BY type ORDER BY type")
    pairs, multi, relations, tied = _rows(
        conn,
        "SELECT count(*), count(*) FILTER (WHERE cardinality(relations) > 1),"
        " COALESCE(sum(cardinality(relations)), 0), count(DISTINCT user_id) FROM github_repo_user",
    )[0]
    by_relation = _rows(
        conn,
        "SELECT relation, count(*) FROM github_repo_user_relation WHERE removed_at IS NULL"
        " GROUP BY relation ORDER BY relation",
    )
    stored_users = sum(n for _, n in users)
    lines = [
        f"repositories requested : {sum(n for _, n in requests):,} ("
        + ", ".join(f"{s}={n:,}" for s, n in requests)
        + ")",
        f"users                  : {stored_users:,} stored ("
        + ", ".join(f"{t or 'unknown type'}={n:,}" for t, n in users)
        + f"); {tied:,} user(s) in {pairs:,} pairs now (a user tied to several repositories is "
        "one user, several pairs)",
        f"(repo, user) pairs     : {pairs:,}: a pair is one user tied to one repository, by one "
        "relation or more",
        f"relations              : {relations:,} ("
        + ", ".join(f"{r}={n:,}" for r, n in by_relation)
        + f") = {pairs:,} pairs + {relations - pairs:,}, as {multi:,} pair(s) hold more than one "
        "relation (a user who both forked and starred a repository is one pair, two relations)",
    ]
    lists = incomplete_lists(conn)
    if not lists:
        lines.append("lists not complete     : none, every list of every repository was read in full")
        return lines
    lines.append(
        f"lists not complete     : {len(lists):,} (a list is one relation of one repository; what "
        "they hold is missing from the figures above)"
    )
    for item in lists:
        what = item["relation"] or "every list"
        lines.append(f"  {item['repo']} {what}: {item['reason']}")
    return lines
