"""REST routes: repositories and their user lists, user profiles, /rate_limit.

Handlers only build responses; quota, secondary limits, ETags and headers are applied by app.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlencode

from .accounting import Accounting, TokenState
from .data import Dataset, Repo
from .encoding import iso
from .shapes import full_user, repo_json, simple_user

DOCS = "https://docs.github.com/rest"
STAR_MEDIA_TYPE = "application/vnd.github.star+json"
STARGAZER_PAGE_LIMIT = 400  # GitHub: stargazer pages beyond 400 answer 422
DEFAULT_PER_PAGE, MAX_PER_PAGE = 30, 100
STAR_COUNT = "stargazers/count"
INTEGRATION_FORBIDDEN = "Resource not accessible by integration"
SUB_RESOURCES = ("contributors", "forks", "stargazers", "subscribers", STAR_COUNT)

_SUB = r"(?:/(stargazers/count|[^/]+))?/?$"
_REPO_PATH = re.compile(r"^/repos/([^/]+)/([^/]+)" + _SUB)
_REPO_ID_PATH = re.compile(r"^/repositories/(\d+)" + _SUB)
_USER_PATH = re.compile(r"^/users/([^/]+)/?$")
_USER_ID_PATH = re.compile(r"^/user/(\d+)/?$")
# Intermediate names of injected redirect chains and loops: "<old name>~hop<k>" / "<old name>~loop".
# "~" never occurs in a GitHub repository name, so these cannot shadow a real one.
_HOP_NAME = re.compile(r"^(.+)~(?:hop(\d+)|(loop))$")


@dataclass
class RestRequest:
    method: str
    path: str
    query: list[tuple[str, str]]  # in request order, so link headers keep it
    headers: dict[str, str]  # lower-case names
    base_url: str  # http://host:port as the client addressed us

    def param(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None


@dataclass
class RestResult:
    status: int
    body: object = None  # JSON-serialisable; None = empty body
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None  # the accounting FAULT_KINDS entry injected into this answer


def error(status: int, message: str, doc: str = DOCS, **extra: object) -> RestResult:
    return RestResult(status, {"message": message, **extra, "documentation_url": doc, "status": str(status)})


def not_found(doc: str = DOCS) -> RestResult:
    return error(404, "Not Found", doc)


def family(path: str) -> tuple[str, bool]:
    """Endpoint family for secondary-limit points, and whether the endpoint is quota-free."""
    if path.rstrip("/") == "/rate_limit":
        return "rate_limit", True
    m = _REPO_PATH.match(path)
    if m:
        return f"repos/{m.group(3) or ''}", False
    m = _REPO_ID_PATH.match(path)
    if m:
        return f"repos/{m.group(2) or ''}", False
    if _USER_PATH.match(path) or _USER_ID_PATH.match(path):
        return "users", False
    return path.split("/")[1] if path.count("/") else path, False


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class RestApi:
    def __init__(self, ds: Dataset, accounting: Accounting) -> None:
        self.ds = ds
        self.acc = accounting

    def handle(self, req: RestRequest, state: TokenState) -> RestResult:
        path = req.path
        if path.rstrip("/") == "/rate_limit":
            return self._rate_limit(state)
        if path.rstrip("/") == "/user":
            if state.name is None:
                return error(401, "Requires authentication", f"{DOCS}/users/users#get-the-authenticated-user")
            if state.config is not None and state.config.integration:
                # an App installation token acts for no user
                return error(403, INTEGRATION_FORBIDDEN, f"{DOCS}/users/users#get-the-authenticated-user")
            return RestResult(200, self._account_user(state))
        with self.ds.lock:
            m = _REPO_PATH.match(path)
            if m:
                owner, name, sub = unquote(m.group(1)), unquote(m.group(2)), m.group(3)
                hop = _HOP_NAME.match(name)
                if hop:
                    return self._hop(req, owner, hop.group(1), hop.group(2), bool(hop.group(3)), sub)
                repo, moved = self.ds.lookup(owner, name)
                if repo is not None and moved and (sub is None or sub in SUB_RESOURCES):
                    return self._moved(req, repo, owner, name, sub)
                return self._repo(req, state, repo, sub)
            m = _REPO_ID_PATH.match(path)
            if m:
                return self._repo(req, state, self.ds.repos.get(int(m.group(1))), m.group(2))
            m = _USER_PATH.match(path)
            if m:
                uid = self.ds.user_id(unquote(m.group(1)))
                return (
                    RestResult(200, full_user(self.ds, uid))
                    if uid and uid not in self.ds.deleted
                    else not_found(f"{DOCS}/users/users#get-a-user")
                )
            m = _USER_ID_PATH.match(path)
            if m:
                uid = int(m.group(1))
                return (
                    RestResult(200, full_user(self.ds, uid))
                    if self.ds.user_type(uid) and uid not in self.ds.deleted
                    else not_found(f"{DOCS}/users/users#get-a-user-using-their-id")
                )
        return not_found()

    def _account_user(self, state: TokenState) -> dict:
        """GET /user: the GitHub account the token belongs to (tokens of one account agree). Its
        login is the account name; the rest of the profile is a stable synthetic person's."""
        account = state.account_name or ""
        user = full_user(self.ds, self.ds.viewer_id(account))
        old = user["login"]
        for key, value in user.items():  # urls name the login
            if isinstance(value, str) and key.endswith("url"):
                user[key] = value.replace(f"/{quote(old)}", f"/{quote(account)}")
        user.update({"login": account, "type": "User", "name": None})
        return user

    def _rate_limit(self, state: TokenState) -> RestResult:
        resources = {}
        for r in ("core", "graphql", "search"):
            w = self.acc.snapshot(state, r)
            resources[r] = {"limit": w.limit, "used": w.used, "remaining": w.remaining, "reset": w.reset}
        return RestResult(200, {"resources": resources})

    # ------------------------------------------------------------------ repositories
    def _repo(self, req: RestRequest, state: TokenState, repo: Repo | None, sub: str | None) -> RestResult:
        """A repository (or one of its lists) under its current name or its id; an old name of a
        moved repo only reaches here with an unknown sub-path (404, as on GitHub)."""
        if repo is None or (sub is not None and sub not in SUB_RESOURCES):
            return not_found(f"{DOCS}/repos/repos#get-a-repository")
        if repo.kind == "blocked":
            return self._blocked(repo)
        if sub is None:
            return RestResult(200, repo_json(self.ds, repo, detail=True))
        if sub == STAR_COUNT:
            # counts stay public where the list itself is limited to collaborators
            return RestResult(200, {"count": len(repo.stars)})
        if sub == "contributors":
            return self._contributors(req, repo)
        if sub == "forks":
            return self._forks(req, repo)
        return self._restricted_list(req, state, repo, sub)

    @staticmethod
    def _blocked(repo: Repo) -> RestResult:
        """A DMCA takedown answers 451 with a link to the notice; a terms-of-service block answers
        403 with the same message and a block object (shared/NOTES.md)."""
        block: dict[str, object] = {"reason": repo.block_reason, "created_at": iso(repo.updated_at)}
        if repo.block_reason == "dmca":
            block["html_url"] = f"https://github.com/github/dmca/blob/master/2025/{repo.id}.md"
        status = 451 if repo.block_reason == "dmca" else 403
        return RestResult(status, {"message": "Repository access blocked", "block": block})

    # ------------------------------------------------------------------ redirects
    @staticmethod
    def _redirect(req: RestRequest, target: str, sub: str | None, fault: str | None = None) -> RestResult:
        """A 301 to target (a path), keeping sub-path and query as GitHub does."""
        location = f"{req.base_url}{target}" + (f"/{sub}" if sub else "")
        if req.query:
            location += "?" + urlencode(req.query)
        result = error(301, "Moved Permanently", "https://docs.github.com/v3/#http-redirects", url=location)
        result.headers["location"] = location
        result.fault = fault
        return result

    def _moved(self, req: RestRequest, repo: Repo, owner: str, name: str, sub: str | None) -> RestResult:
        """An old name of a renamed repo. GitHub answers one 301 straight to /repositories/{id}, however
        often the repo was renamed; the injected faults add hops or a loop in front of it."""
        cfg = self.acc.config
        stem = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        if cfg.fault_redirect_loop:
            return self._redirect(req, f"{stem}~loop", sub, "redirect_loop")
        if cfg.fault_redirect_chain > 1:
            return self._redirect(req, f"{stem}~hop1", sub, "redirect_chain")
        return self._redirect(req, f"/repositories/{repo.id}", sub)

    def _hop(
        self, req: RestRequest, owner: str, name: str, k: str | None, loop: bool, sub: str | None
    ) -> RestResult:
        """An intermediate URL of an injected chain or loop. It always answers, even once the fault is
        switched off (then straight to the final URL), so a client caught mid-chain gets out."""
        repo, moved = self.ds.lookup(owner, name)
        if repo is None or not moved or (sub is not None and sub not in SUB_RESOURCES):
            return not_found(f"{DOCS}/repos/repos#get-a-repository")
        cfg = self.acc.config
        stem = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        final = f"/repositories/{repo.id}"
        if loop:
            return self._redirect(req, stem if cfg.fault_redirect_loop else final, sub, "redirect_loop")
        nxt = int(k or 0) + 1
        target = f"{stem}~hop{nxt}" if nxt < cfg.fault_redirect_chain else final
        return self._redirect(req, target, sub, "redirect_chain")

    # ------------------------------------------------------------------ lists
    def _page(
        self, req: RestRequest, target: str, total: int, max_page: int | None = None, loop: bool = False
    ) -> tuple[int, int, str | None, bool]:
        """Return (start, end, link header, looped) for page/per_page, formatted like GitHub's, with
        links to target (a path). loop: give the last page a rel="next" back to an earlier page (the
        injected link-loop fault)."""
        per_page = _int(req.param("per_page"), DEFAULT_PER_PAGE)
        per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
        page = max(1, _int(req.param("page"), 1))
        last = max(1, math.ceil(total / per_page))
        if max_page is not None:
            last = min(last, max_page)
        start = (page - 1) * per_page
        links = []
        if page > 1:
            links.append((min(page - 1, last), "prev"))
        if page < last:
            links += [(page + 1, "next"), (last, "last")]
        looped = loop and page >= last
        if looped:
            back = 1 if self.acc.config.fault_link_loop_to == "first" else max(1, min(page, last) - 1)
            links.append((back, "next"))
        if page > 1:
            links.append((1, "first"))
        header = ", ".join(f'<{self._page_url(req, target, n)}>; rel="{rel}"' for n, rel in links) or None
        return start, min(start + per_page, total), header, looped

    @staticmethod
    def _page_url(req: RestRequest, target: str, page: int) -> str:
        # keep every other parameter, and page where the client put it, as GitHub does
        if any(k == "page" for k, _ in req.query):
            query = [(k, str(page) if k == "page" else v) for k, v in req.query]
        else:
            query = [*req.query, ("page", str(page))]
        return f"{req.base_url}{target}?{urlencode(query)}"

    def _listing(
        self, req: RestRequest, repo: Repo, sub: str, total: int, build, max_page: int | None = None
    ) -> RestResult:
        patterns = self.acc.config.fault_link_loop
        loop = bool(patterns) and self.ds.repo_matches(patterns, repo)
        # GitHub's links address the repository by id, whatever path the client used
        # (octokit/fixtures, scenario paginate-issues), so they survive a rename mid-listing
        target = f"/repositories/{repo.id}/{sub}"
        start, end, link, looped = self._page(req, target, total, max_page, loop)
        result = RestResult(200, build(start, end))
        if link:
            result.headers["link"] = link
        if looped:
            result.fault = "link_loop"
        return result

    def _contributors(self, req: RestRequest, repo: Repo) -> RestResult:
        ds = self.ds
        if repo.kind == "empty":
            return RestResult(204)
        if repo.kind == "too_large":
            return error(
                403,
                "The history or contributor list is too large to list contributors for this "
                "repository via the API.",
                f"{DOCS}/repos/repos#list-repository-contributors",
            )
        anon = (req.param("anon") or "").lower() in ("1", "true")
        # entries: (contributions, tie-break, kind, payload)
        entries: list[tuple] = [(n, uid, "user", uid) for uid, n in ds.linked_contributors(repo)]
        if anon:
            # GitHub links only the top 500 authors; the rest appear as anonymous entries
            entries += [(n, uid, "unlinked", uid) for uid, n in repo.contributors[len(entries) :]]
            entries += [
                (n, 10**12 + i, "anon", (email, name)) for i, (n, email, name) in enumerate(repo.anonymous)
            ]
            entries.sort(key=lambda e: (-e[0], e[1]))

        def build(start: int, end: int) -> list[dict]:
            out = []
            for n, _, kind, payload in entries[start:end]:
                if kind == "user":
                    out.append({**simple_user(ds, payload), "contributions": n})
                elif kind == "unlinked":
                    login = ds.login(payload)
                    name = ds.profile(payload)["name"] or login
                    out.append(
                        {
                            "email": f"{payload}+{login}@users.noreply.github.com",
                            "name": name,
                            "type": "Anonymous",
                            "contributions": n,
                        }
                    )
                else:
                    out.append(
                        {"email": payload[0], "name": payload[1], "type": "Anonymous", "contributions": n}
                    )
            return out

        return self._listing(req, repo, "contributors", len(entries), build)

    def _forks(self, req: RestRequest, repo: Repo) -> RestResult:
        ds = self.ds
        sort = req.param("sort") or "newest"
        forks = [ds.repos[f] for _, f in repo.forks]  # oldest first
        if sort == "oldest":
            pass
        elif sort in ("stargazers", "watchers"):
            forks.sort(key=lambda r: (-len(r.stars), -r.created_at, -r.id))
        else:
            forks.reverse()
        return self._listing(
            req, repo, "forks", len(forks), lambda s, e: [repo_json(ds, r) for r in forks[s:e]]
        )

    def _restricted_list(self, req: RestRequest, state: TokenState, repo: Repo, sub: str) -> RestResult:
        ds = self.ds
        patterns = state.config.collaborator_repos if state.config else ()
        relation = "watchers" if sub == "subscribers" else "stargazers"
        if state.config is not None and state.config.integration:
            # GitHub App installation tokens may not list stargazers or watchers (2026)
            page = "watching#list-watchers" if sub == "subscribers" else "starring#list-stargazers"
            return error(403, INTEGRATION_FORBIDDEN, f"{DOCS}/activity/{page}")
        if relation in ds.restricted_relations(repo, patterns):
            # GitHub limits these lists to collaborators; how it says no differs between repos
            if repo.restriction == "404":
                return not_found(f"{DOCS}/activity/starring#list-stargazers")
            if repo.restriction == "403":
                return error(
                    403, "Must have admin rights to Repository.", f"{DOCS}/activity/starring#list-stargazers"
                )
            return RestResult(200, [])
        if sub == "subscribers":
            users = [uid for _, uid in repo.watchers]
            return self._listing(
                req, repo, sub, len(users), lambda s, e: [simple_user(ds, u) for u in users[s:e]]
            )
        if _int(req.param("page"), 1) > STARGAZER_PAGE_LIMIT:
            return error(
                422,
                "In order to keep the API fast for everyone, pagination is limited for this "
                "resource. Check the rel=last link relation in the Link response header to see "
                "how far back you can traverse.",
                "https://docs.github.com/v3/#pagination",
            )
        stars = repo.stars
        if STAR_MEDIA_TYPE in req.headers.get("accept", ""):

            def build(s: int, e: int) -> list[dict]:
                return [{"starred_at": iso(t), "user": simple_user(ds, u)} for t, u in stars[s:e]]
        else:

            def build(s: int, e: int) -> list[dict]:
                return [simple_user(ds, u) for _, u in stars[s:e]]

        return self._listing(req, repo, sub, len(stars), build, max_page=STARGAZER_PAGE_LIMIT)
