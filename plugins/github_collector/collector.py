"""Collect the users tied to a batch of repositories, one checkpointable step at a time.

The whole progress of a batch is a JSON-able ``BatchState``: per repo its resolution and,
per relation, a cursor. Each step fetches one thing (one packed GraphQL query, or one REST
page of contributors), turns it into records and hands records and the new state to the
sink together, which must store them atomically. So a crash or a quota stop loses at most
the step in flight, and a restart from the stored state fetches no staged page again.

Quota use per user, as low as GitHub allows:
- forkers, stargazers and watchers come from GraphQL pages of 100 with inline profiles, and
  several pages (of several repos) share one query: GitHub charges a query by its connections
  (sum / 100, at least 1), so ten pages cost one point;
- contributors exist only in REST (pages of 100); their profiles then come 100 node ids per
  ``nodes(ids:)`` field, several fields per query, piggybacking on connection pages when any;
- the repository summary (id, current name, counts) rides on its first GraphQL query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from github_collector.client import GitHubClient
from github_collector.errors import (
    GitHubUnavailable,
    GraphQLError,
    GraphQLTimeout,
    NoUsableToken,
    TooManyRedirects,
)
from github_collector.queries import GRAPHQL_RELATIONS, MAX_PAGE, RELATIONS, ConnectionPage, Query, RepoPart
from github_collector.records import link, user_from_graphql, user_from_rest

log = logging.getLogger(__name__)

# Repository statuses (github_repository.status).
OK, MOVED, NOT_FOUND, BLOCKED, ERROR, PENDING = "ok", "moved", "not_found", "blocked", "error", "pending"
# Relation outcomes; the first three are complete, the others are recorded as unavailable.
REL_OK, REL_EMPTY, REL_UNCHANGED = "ok", "empty", "unchanged"
REL_RESTRICTED, REL_TOO_LARGE, REL_UNAVAILABLE = "restricted", "too_large", "unavailable"
COMPLETE_RELATION = (REL_OK, REL_EMPTY, REL_UNCHANGED)
COUNT_KEY = {"forkers": "forks", "stargazers": "stargazers", "watchers": "watchers"}
TIME_KEY = {"forkers": "createdAt", "stargazers": "starredAt"}  # relations with a high-water mark
SUMMARIES_PER_QUERY = 50  # summaries fill no connection, so many share one query's point

MAX_GRAPHQL_FAILURES = 8  # consecutive failed queries before the batch gives up (and Airflow retries)
MAX_PART_ERRORS = 5  # failed answers for one repository before its open lists are recorded unavailable
DEFAULT_NODE_BUDGET = 1000  # nodes per GraphQL query; halved on a 502/504
MIN_NODE_BUDGET = 10
NODES_PER_FIELD = 100  # GitHub's cap for nodes(ids:)


def new_batch_state(
    repos: Iterable[str],
    relations: Iterable[str],
    previous: dict[str, dict] | None = None,
    full_refresh: bool = False,
) -> dict:
    """A batch's starting state. ``previous`` maps a requested name to what the last run
    stored about it (``relation_state``), which lets unchanged relations cost nothing."""
    rels = [r for r in RELATIONS if r in set(relations)]
    previous = {} if full_refresh else (previous or {})
    state: dict[str, Any] = {"repos": {}, "pending_profiles": [], "node_budget": DEFAULT_NODE_BUDGET}
    for full in repos:
        owner, name = full.split("/", 1)
        state["repos"][full] = {
            "requested": full,
            "owner": owner,
            "name": name,
            "repo_id": None,
            "full_name": None,
            "status": PENDING,
            "detail": None,
            "counts": {},
            "previous": (previous.get(full) or {}).get("relation_state") or {},
            "previous_status": (previous.get(full) or {}).get("status"),
            "streams": {r: _new_stream() for r in rels},
        }
    return state


def _new_stream() -> dict:
    # cursor: GraphQL endCursor or REST next URL; stop_at: stored high-water mark to page back
    # to (newest first); hwm: newest timestamp seen so far; seen: REST pages read (loop guard).
    # tried: tokens that saw the list hidden (another token may be a collaborator).
    return {
        "cursor": None,
        "done": False,
        "status": None,
        "pages": 0,
        "seen": [],
        "stop_at": None,
        "hwm": None,
        "tried": [],
    }


def all_not_found(errors: list[dict]) -> bool:
    return bool(errors) and all(e.get("type") == "NOT_FOUND" for e in errors)


def _messages(errors: list[dict]) -> str:
    return "; ".join(sorted({str(e.get("message", ""))[:120] for e in errors})) or "no error given"


def is_finished(state: dict) -> bool:
    return (
        not state["pending_profiles"]
        and all(s["done"] for r in state["repos"].values() for s in r["streams"].values())
        and all(r["status"] != PENDING for r in state["repos"].values())
    )


@dataclass
class Step:
    """What one fetch produced; the sink stores it together with ``state``."""

    state: dict
    users: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    repos: list[dict] = field(default_factory=list)
    cost: dict[str, int] = field(default_factory=dict)
    pages: int = 0


class Sink(Protocol):
    def write(self, step: Step) -> None: ...


def repo_record(repo: dict) -> dict:
    """The github_repository row for a repo's current state."""
    unavailable = sorted(
        rel for rel, s in repo["streams"].items() if s["done"] and s["status"] not in COMPLETE_RELATION
    )
    return {
        "requested": repo["requested"],
        "repo_id": repo["repo_id"],
        "full_name": repo["full_name"],
        "status": repo["status"],
        "detail": repo["detail"],
        "unavailable_relations": unavailable,
        "relation_status": {rel: s["status"] for rel, s in repo["streams"].items()},
        "relation_state": {
            rel: {
                "status": s["status"],
                "count": repo["counts"].get(COUNT_KEY.get(rel, "")),
                "hwm": s["hwm"],
                "tried": s["tried"],
            }
            for rel, s in repo["streams"].items()
            if s["done"]
        },
        "stargazer_count": repo["counts"].get("stargazers"),
        "fork_count": repo["counts"].get("forks"),
        "watcher_count": repo["counts"].get("watchers"),
    }


class Collector:
    def __init__(
        self,
        client: GitHubClient,
        sink: Sink,
        *,
        page_size: int = MAX_PAGE,
        profile_is_fresh: Callable[[list[int]], set[int]] | None = None,
    ) -> None:
        self.client = client
        self.sink = sink
        self.page_size = max(1, min(MAX_PAGE, page_size))
        self.profile_is_fresh = profile_is_fresh
        self._profiled: set[int] = set()  # users this process already has a full profile of
        self._last_spent = (client.stats.core_spent, client.stats.graphql_spent)

    def _emit(self, step: Step) -> None:
        """Hand a step to the sink with the quota the client really spent since the last one."""
        spent = (self.client.stats.core_spent, self.client.stats.graphql_spent)
        step.cost = {"core": spent[0] - self._last_spent[0], "graphql": spent[1] - self._last_spent[1]}
        self.sink.write(step)
        self._last_spent = spent

    # -- driver -------------------------------------------------------------------------------
    def run(self, state: dict) -> dict:
        """Run steps until the batch is done. Quota exhaustion propagates; state is already saved."""
        while self.step(state):
            pass
        return state

    def step(self, state: dict) -> bool:
        """Do one unit of work and hand it to the sink. False when nothing is left."""
        pending = [k for k, r in state["repos"].items() if r["status"] == PENDING]
        if pending:  # first learn every repo's id, name and counts: ~1 point per 50 repos
            query = Query(
                repos=[self._part(state["repos"][k], summary=True) for k in pending[:SUMMARIES_PER_QUERY]]
            )
            self._run_graphql(state, query, [(k, []) for k in pending[:SUMMARIES_PER_QUERY]])
            return True
        query, plan, exclude = self._plan_pages(state)
        if query.repos:
            if not exclude:  # profile look-ups ride along, but not on a restricted retry
                self._attach_profiles(state, query)
            self._run_graphql(state, query, plan, exclude)
            return True
        repo = self._next_contributors(state)
        if repo is not None and len(state["pending_profiles"]) < state["node_budget"]:
            self._contributors_page(state, repo)
            return True
        if state["pending_profiles"]:
            query = Query()
            self._attach_profiles(state, query)
            self._run_graphql(state, query, [])
            return True
        if repo is not None:
            self._contributors_page(state, repo)
            return True
        return False

    # -- planning -----------------------------------------------------------------------------
    @staticmethod
    def _part(repo: dict, summary: bool = False, pages: list[ConnectionPage] | None = None) -> RepoPart:
        owner, name = (repo["full_name"] or repo["requested"]).split("/", 1)
        return RepoPart(owner, name, summary=summary, pages=pages or [])

    def _plan_pages(self, state: dict) -> tuple[Query, list[tuple[str, list[str]]], frozenset[str]]:
        """Pack the next page of as many open (repo, relation) streams as the node budget allows.

        Streams that some token saw hidden are retried with the other tokens only, so they
        are packed with streams that exclude the same tokens.
        """
        budget = state["node_budget"]
        first = max(1, min(self.page_size, budget))
        room = max(1, budget // first)
        query = Query()
        plan: list[tuple[str, list[str]]] = []
        exclude: frozenset[str] | None = None
        for key, repo in state["repos"].items():
            if room <= 0:
                break
            if repo["status"] not in (OK, MOVED):
                continue
            rels = []
            for r in GRAPHQL_RELATIONS:
                stream = repo["streams"].get(r)
                if stream is None or stream["done"] or len(rels) >= room:
                    continue
                tried = frozenset(stream["tried"])
                if exclude is None:
                    exclude = tried
                if tried == exclude:
                    rels.append(r)
            if not rels:
                continue
            pages = [
                ConnectionPage(r, first, repo["streams"][r]["cursor"], bool(repo["streams"][r]["stop_at"]))
                for r in rels
            ]
            query.repos.append(self._part(repo, pages=pages))
            plan.append((key, rels))
            room -= len(rels)
        return query, plan, exclude or frozenset()

    def _attach_profiles(self, state: dict, query: Query) -> None:
        budget = max(0, state["node_budget"] - query.node_count())
        pending = state["pending_profiles"]
        take = min(len(pending), max(budget, NODES_PER_FIELD if not query.repos else 0))
        ids = [p[0] for p in pending[:take]]
        query.node_ids = [ids[i : i + NODES_PER_FIELD] for i in range(0, len(ids), NODES_PER_FIELD)]

    def _next_contributors(self, state: dict) -> dict | None:
        for repo in state["repos"].values():
            s = repo["streams"].get("contributors")
            if s and not s["done"] and repo["status"] in (OK, MOVED):
                return repo
        return None

    # -- GraphQL ------------------------------------------------------------------------------
    def _run_graphql(
        self,
        state: dict,
        query: Query,
        plan: list[tuple[str, list[str]]],
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        try:
            resp = self.client.graphql(query.build, cost=query.estimated_cost(), exclude=exclude)
        except NoUsableToken:
            if not exclude:
                raise
            # Only tokens that already saw these lists hidden are left usable (the others were
            # rejected): the lists stay restricted, and the batch goes on with the rest.
            for key, rels in plan:
                for rel in rels:
                    state["repos"][key]["streams"][rel].update(done=True, status=REL_RESTRICTED)
            self._emit(Step(state=state, repos=[repo_record(state["repos"][k]) for k, _ in plan]))
            return
        except GraphQLTimeout as exc:
            # GitHub gave up on the query; it still cost quota. Ask for half as much next time,
            # but not forever: a query that fails even at the smallest size is an outage.
            failures = state.get("graphql_failures", 0) + 1
            if failures > MAX_GRAPHQL_FAILURES:
                raise GitHubUnavailable(f"GraphQL failed {failures - 1} times in a row: {exc}") from None
            state["graphql_failures"] = failures
            state["node_budget"] = max(MIN_NODE_BUDGET, state["node_budget"] // 2)
            log.warning("%s; node budget now %s", exc, state["node_budget"])
            self._emit(Step(state=state))
            return
        state["graphql_failures"] = 0
        data = resp.data or {}
        by_alias: dict[str, list[dict]] = {}
        for err in resp.errors:
            path = err.get("path") or []
            if path:
                by_alias.setdefault(str(path[0]), []).append(err)
        step = Step(state=state)
        unexplained = [e for e in resp.errors if not e.get("path")]
        if unexplained and not data:
            raise GraphQLError(unexplained)

        for i, (key, rels) in enumerate(plan):
            repo = state["repos"][key]
            node = data.get(f"r{i}")
            errors = by_alias.get(f"r{i}", [])
            if node is None and repo["status"] != PENDING and not all_not_found(errors):
                # A repository already resolved failed this time (GitHub answers a part it could
                # not serve with null and an error): ask again, a bounded number of times.
                repo["part_errors"] = repo.get("part_errors", 0) + 1
                if repo["part_errors"] >= MAX_PART_ERRORS:
                    repo["detail"] = f"GraphQL kept failing: {_messages(errors)}"
                    self._close_all(repo, REL_UNAVAILABLE)
                step.repos.append(repo_record(repo))
                continue
            if node is None:
                if all_not_found(errors):
                    # GraphQL follows renames, so NOT_FOUND means gone or private: no REST call needed.
                    repo["status"] = NOT_FOUND
                    repo["detail"] = str(errors[0].get("message", ""))[:200]
                elif repo.get("previous_status") == BLOCKED:
                    repo["status"] = BLOCKED  # still refused by GraphQL: no need to ask REST why again
                    repo["detail"] = str((errors or [{}])[0].get("message", ""))[:200]
                else:
                    self._resolve_via_rest(repo, errors)
                if repo["status"] not in (OK, MOVED):
                    self._close_all(repo, REL_UNAVAILABLE)
                step.repos.append(repo_record(repo))
                continue
            if repo["status"] == PENDING:
                self._apply_summary(repo, node)
            failed_lists = 0
            for rel in rels:
                conn = node.get(f"r{i}_{rel}")
                if conn is None and any(len(e.get("path") or []) > 1 for e in errors):
                    failed_lists += 1  # this page failed (null with an error): ask again, bounded below
                    if repo.get("part_errors", 0) + 1 < MAX_PART_ERRORS:
                        continue
                self._apply_connection(repo, rel, conn, step, resp.token)
            repo["part_errors"] = repo.get("part_errors", 0) + 1 if failed_lists else 0
            step.repos.append(repo_record(repo))

        # Profiles asked for by node id (contributors). A null slot is a user GitHub no
        # longer has: keep the list-item record we staged, drop it from pending. A whole
        # field that failed (null, with an error) is asked again.
        # Ids to ask again: a whole field that came back null, or one item nulled with an error
        # (GitHub could not serve it). A null item without an error is an account that is gone.
        retry: set[str] = set()
        for j, ids in enumerate(query.node_ids):
            if data.get(f"u{j}") is None:
                retry.update(ids)
            for err in by_alias.get(f"u{j}", []):
                path = err.get("path") or []
                if len(path) > 1 and isinstance(path[1], int) and path[1] < len(ids):
                    retry.add(ids[path[1]])
        state["profile_errors"] = state.get("profile_errors", 0) + 1 if retry else 0
        if state["profile_errors"] >= MAX_PART_ERRORS:  # bounded: give up on those, keep list items
            log.warning("profile look-ups kept failing: %s", _messages(resp.errors))
            state["profile_errors"], retry = 0, set()
        asked = {nid for ids in query.node_ids for nid in ids} - retry
        for j in range(len(query.node_ids)):
            for node in data.get(f"u{j}") or []:
                rec = user_from_graphql(node) if node else None
                if rec:
                    step.users.append(rec)
                    self._profiled.add(rec["user_id"])
        state["pending_profiles"] = [p for p in state["pending_profiles"] if p[0] not in asked]
        if state["node_budget"] < DEFAULT_NODE_BUDGET and not resp.errors:
            state["node_budget"] = min(DEFAULT_NODE_BUDGET, state["node_budget"] * 2)
        self._emit(step)

    def _apply_summary(self, repo: dict, node: dict) -> None:
        repo["repo_id"] = int(node["databaseId"])
        repo["full_name"] = node["nameWithOwner"]
        moved = node["nameWithOwner"].lower() != repo["requested"].lower()
        repo["status"] = MOVED if moved else OK
        if moved:
            repo["detail"] = f"moved to {node['nameWithOwner']}"
        repo["counts"] = {
            "stargazers": node.get("stargazerCount"),
            "forks": node.get("forkCount"),
            "watchers": (node.get("watcherTotal") or {}).get("totalCount"),
        }
        self._decide_streams(repo, bool(node.get("isEmpty")), set(self.client.fingerprints))

    @staticmethod
    def _decide_streams(repo: dict, is_empty: bool, tokens: set[str]) -> None:
        """Skip what the counts prove empty or unchanged; page only the news where possible."""
        prev = repo.get("previous") or {}
        for rel, stream in repo["streams"].items():
            before = prev.get(rel) or {}
            complete_before = before.get("status") in COMPLETE_RELATION
            if rel == "contributors":
                if is_empty:
                    stream.update(done=True, status=REL_EMPTY)
                elif before.get("status") == REL_TOO_LARGE:
                    stream.update(
                        done=True, status=REL_TOO_LARGE
                    )  # histories only grow; full_refresh asks again
                continue  # REST with ETags: an unchanged list answers 304, which is free
            count = repo["counts"].get(COUNT_KEY[rel])
            stream["hwm"] = before.get("hwm")
            if count == 0:
                stream.update(done=True, status=REL_EMPTY)
            elif complete_before and before.get("count") == count:
                stream.update(done=True, status=REL_UNCHANGED)
            elif (
                before.get("status") == REL_RESTRICTED
                and before.get("count") == count
                and tokens <= set(before.get("tried") or ())
            ):
                # Hidden from every token we have, and nothing changed: asking again costs
                # quota and tells nothing. A new token or a new count asks again.
                stream.update(done=True, status=REL_RESTRICTED, tried=sorted(before["tried"]))
            elif complete_before and rel in TIME_KEY and before.get("hwm"):
                stream["stop_at"] = before["hwm"]  # newest first, until what is already stored

    def _apply_connection(self, repo: dict, rel: str, conn: dict | None, step: Step, token: str) -> None:
        stream = repo["streams"][rel]
        if conn is None:
            stream.update(done=True, status=REL_UNAVAILABLE)
            return
        items = [i for i in (conn.get("edges") if rel == "stargazers" else conn.get("nodes")) or [] if i]
        if stream["cursor"] is None and not items:
            # GitHub hides stargazers and watchers from non-admins by returning no edges while
            # the counts stay real: an empty first page with a positive count is a restriction.
            total = max(conn.get("totalCount") or 0, repo["counts"].get(COUNT_KEY[rel]) or 0)
            if total > 0:
                stream["tried"] = sorted({*stream["tried"], token})
                if set(stream["tried"]) >= set(self.client.fingerprints):
                    stream.update(done=True, status=REL_RESTRICTED)
            else:
                stream.update(done=True, status=REL_EMPTY)
            return
        reached_stored = False
        if stream["stop_at"]:  # newest first: keep only what is newer than the stored mark
            fresh = [i for i in items if (i.get(TIME_KEY[rel]) or "") > stream["stop_at"]]
            reached_stored = len(fresh) < len(items)
            items = fresh
        repo_id = repo["repo_id"]
        for item in items:
            if rel == "forkers":
                owner = item.get("owner")
                rec = user_from_graphql(owner) if owner else None
                if rec:
                    step.users.append(rec)
                    step.links.append(link(repo_id, rec["user_id"], rel, forked_at=item.get("createdAt")))
            elif rel == "stargazers":
                rec = user_from_graphql(item.get("node"))
                if rec:
                    step.users.append(rec)
                    step.links.append(link(repo_id, rec["user_id"], rel, starred_at=item.get("starredAt")))
            else:
                rec = user_from_graphql(item)
                if rec:
                    step.users.append(rec)
                    step.links.append(link(repo_id, rec["user_id"], rel))
            if rec:
                self._profiled.add(rec["user_id"])
            ts = item.get(TIME_KEY.get(rel, ""), None)
            if ts and (stream["hwm"] is None or ts > stream["hwm"]):
                stream["hwm"] = ts
        info = conn.get("pageInfo") or {}
        cursor = info.get("endCursor")
        stream["pages"] += 1
        step.pages += 1
        if reached_stored or not info.get("hasNextPage") or not cursor or cursor == stream["cursor"]:
            # A cursor that does not move would loop forever: stop, keep what we have.
            stream.update(done=True, status=REL_OK)
        stream["cursor"] = cursor

    def _close_all(self, repo: dict, status: str) -> None:
        for s in repo["streams"].values():
            if not s["done"]:
                s.update(done=True, status=status)

    def _resolve_via_rest(self, repo: dict, errors: list[dict]) -> None:
        """GraphQL could not give the repository: one REST GET says why (404, 451, moved...)."""
        try:
            resp = self.client.rest(f"/repos/{repo['requested']}", conditional=False)
        except TooManyRedirects as exc:
            repo["status"] = ERROR
            repo["detail"] = str(exc)[:200]
            return
        if resp.status == 200 and isinstance(resp.data, dict) and resp.data.get("id"):
            repo["repo_id"] = int(resp.data["id"])
            repo["full_name"] = resp.data["full_name"]
            moved = bool(resp.redirects) or resp.data["full_name"].lower() != repo["requested"].lower()
            repo["status"] = MOVED if moved else OK
            repo["counts"] = {
                "stargazers": resp.data.get("stargazers_count"),
                "forks": resp.data.get("forks_count"),
                "watchers": resp.data.get("subscribers_count"),
            }
            return
        repo["status"] = {404: NOT_FOUND, 451: BLOCKED}.get(resp.status, ERROR)
        kinds = ",".join(sorted({str(e.get("type")) for e in errors})) or "none"
        repo["detail"] = f"HTTP {resp.status}: {resp.message[:200]} (GraphQL: {kinds})"

    # -- REST contributors ----------------------------------------------------------------------
    def _contributors_page(self, state: dict, repo: dict) -> None:
        stream = repo["streams"]["contributors"]
        url = stream["cursor"] or f"/repos/{repo['full_name']}/contributors?per_page={self.page_size}"
        step = Step(state=state)
        try:
            resp = self.client.rest(url)
        except TooManyRedirects as exc:
            stream.update(done=True, status=REL_UNAVAILABLE)
            repo["detail"] = f"contributors: {exc}"[:200]
            step.repos.append(repo_record(repo))
            self._emit(step)
            return
        if resp.status == 204:
            stream.update(done=True, status=REL_EMPTY)
        elif resp.status == 200 and isinstance(resp.data, list):
            stream["pages"] += 1
            step.pages = 1
            fresh_needed: list[dict] = []
            for item in resp.data:
                if not item.get("id"):  # anonymous contributors carry no account
                    continue
                rec = user_from_rest(item)
                step.users.append(rec)
                step.links.append(
                    link(
                        repo["repo_id"],
                        rec["user_id"],
                        "contributors",
                        contributions=item.get("contributions"),
                    )
                )
                if rec["user_id"] not in self._profiled and rec.get("node_id"):
                    fresh_needed.append(rec)
            self._queue_profiles(state, fresh_needed)
            nxt = resp.next_url
            seen = stream.setdefault("seen", [])
            seen.append(url)
            if not nxt or nxt in seen:
                stream.update(done=True, status=REL_OK if resp.data or stream["pages"] > 1 else REL_EMPTY)
                if nxt:
                    repo["detail"] = "contributors: link header points back to a page already read"
            stream["cursor"] = nxt
        elif resp.status == 403 and "too large" in resp.message.lower():
            stream.update(done=True, status=REL_TOO_LARGE)
        else:
            stream.update(done=True, status=REL_UNAVAILABLE)
            repo["detail"] = f"contributors: HTTP {resp.status} {resp.message[:200]}"
        step.repos.append(repo_record(repo))
        self._emit(step)

    def _queue_profiles(self, state: dict, recs: list[dict]) -> None:
        if not recs:
            return
        fresh = self.profile_is_fresh([r["user_id"] for r in recs]) if self.profile_is_fresh else set()
        queued = {p[1] for p in state["pending_profiles"]}
        for r in recs:
            if r["user_id"] in fresh or r["user_id"] in queued:
                continue
            state["pending_profiles"].append([r["node_id"], r["user_id"]])
            queued.add(r["user_id"])
