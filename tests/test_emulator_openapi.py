"""The emulator's REST answers against GitHub's published REST description.

shared/github/rest-openapi-subset.json is the part of github/rest-api-description (OpenAPI 3.0.3,
as packaged in @octokit/openapi 23.0.2) for the paths the product uses. Every REST endpoint the
emulator serves there is driven with every status it can give and every media type it knows;
each answer must have a status described for its path and method, a content type the description
names, a body that validates against the described schema (OpenAPI 3.0 `nullable`, `$ref`s and
the `discriminator` through openapi-schema-validator) and well-formed described headers.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_COLLAB, EMU_TOKEN_PLAIN, emu_tokens
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker

from github_emulator import SPECIAL_REPOS, Dataset, EmulatorServer, Repo, TokenConfig

pytestmark = pytest.mark.integration

VND = "application/vnd.github+json"
STAR = "application/vnd.github.star+json"
EMU_TOKEN_TINY = "emu-tok-tiny-5555555555"

# Statuses GitHub gives on these paths although the description does not list them there. Their
# bodies are GitHub's usual error object, so they are checked against the document's own
# `basic-error` schema (what its `forbidden`, `not_found` and `moved_permanently` responses use).
UNDESCRIBED_STATUSES: dict[int, str] = {
    # A renamed repository's old name answers 301 on its sub-resources too, keeping the path
    # (shared/NOTES.md "Repos that moved or vanished"; octokit/fixtures, renamed-repository).
    301: "redirect of a renamed repository",
    # Any GET with a matching If-None-Match (docs.github.com, "Best practices for using the REST
    # API": conditional requests); a 304 has no body.
    304: "conditional request",
    # A bad or revoked token, on every path (docs.github.com, "Troubleshooting the REST API").
    401: "bad credentials",
    # Primary and secondary rate limits (docs.github.com, "Rate limits for the REST API"), lists
    # limited to collaborators (GitHub changelog 2026-06-30), terms-of-service blocks (NOTES.md).
    403: "rate limit, restricted list or blocked repository",
    # Lists limited to collaborators (GitHub changelog 2026-06-30); a missing repository.
    404: "restricted list or missing repository",
    429: "rate limit",  # docs.github.com, "Rate limits for the REST API"
    # A DMCA takedown: {"message": "Repository access blocked", "block": {...}} (NOTES.md).
    451: "blocked repository",
    # GitHub's own 5xx bodies ({"message": "Server Error"}); retried by clients.
    502: "server error",
    503: "server error",
}
# The stargazer list's schema is anyOf [simple-user[], stargazer[]]: which one depends on the
# media type asked for (the description's examples "default-response" and
# "alternative-response-with-star-creation-timestamps"), so the test holds each to its own.
MEDIA_VARIANTS: dict[tuple[str, int, str], int] = {
    ("/repos/{owner}/{repo}/stargazers", 200, VND): 0,
    ("/repos/{owner}/{repo}/stargazers", 200, STAR): 1,
}
# What the emulator serves of the description, every path with the statuses it must be seen
# giving there (so a scenario that stops producing its status fails the test too).
SERVED: dict[str, set[int]] = {
    "/rate_limit": {200, 304},
    "/user": {200, 304, 401},
    "/user/{account_id}": {200, 304, 404},
    "/users/{username}": {200, 304, 404},
    "/repos/{owner}/{repo}": {200, 301, 304, 401, 403, 404, 429, 451, 502, 503},
    "/repos/{owner}/{repo}/contributors": {200, 204, 301, 304, 403, 404, 451},
    "/repos/{owner}/{repo}/forks": {200, 301, 304, 403, 404, 451},
    "/repos/{owner}/{repo}/stargazers": {200, 301, 304, 403, 404, 422, 451},
    "/repos/{owner}/{repo}/stargazers/count": {200, 301, 304, 403, 404, 451},
    "/repos/{owner}/{repo}/subscribers": {200, 301, 304, 403, 404, 451},
}
LINK_PART = re.compile(r'^<([^<>]+)>; rel="(next|last|prev|first)"$')
# GitHub's pagination links address the repository by id (octokit/fixtures, paginate-issues).
LINK_URL = re.compile(r"^(?P<base>https?://[^/]+)/repositories/(?P<id>\d+)/(?P<sub>[a-z]+)\?(?P<query>.+)$")
_REPO_ID_PATH = re.compile(r"^/repositories/\d+(?=/|$)")


# ---------------------------------------------------------------------- the description
def spec_path() -> Path:
    root = Path(__file__).resolve().parents[1]
    default = root.parent / "shared" / "github" / "rest-openapi-subset.json"
    return Path(os.environ.get("GITHUB_REST_OPENAPI_PATH", default))


@cache
def raw_spec() -> dict:
    path = spec_path()
    if not path.exists():
        # failing, not skipping: a skip would hide that the emulator is no longer checked
        pytest.fail(
            f"GitHub's REST description not found at {path}: put shared/ beside the clone or set "
            "GITHUB_REST_OPENAPI_PATH"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch: the form of the schemas' x-github-breaking-changes patches."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _versioned(node: object, version: str) -> object:
    if isinstance(node, list):
        return [_versioned(v, version) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _versioned(v, version) for k, v in node.items() if k != "x-github-breaking-changes"}
    for change in node.get("x-github-breaking-changes", ()):
        # list patches (RFC 6902) only touch examples, which are not validated here
        if change["version"] <= version and isinstance(change["patch"], dict):
            out = merge_patch(out, change["patch"])
    return out


@cache
def spec_for(version: str) -> dict:
    """The description as GitHub serves it under API version `version` (the answer's
    x-github-api-version-selected): the breaking changes up to that version applied."""
    return _versioned(raw_spec(), version)


# ---------------------------------------------------------------------- answers and their check
@dataclass
class Answer:
    label: str
    method: str
    url: str
    accept: str
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    expect: int | None = None  # the status the scenario means to produce

    @classmethod
    def of(cls, label: str, resp: requests.Response, accept: str, expect: int | None) -> Answer:
        return cls(
            label,
            resp.request.method or "GET",
            resp.url,
            accept,
            resp.status_code,
            {k.lower(): v for k, v in resp.headers.items()},
            resp.content,
            expect,
        )


@dataclass
class Checker:
    """Checks answers against the description; errors accumulate, one line each."""

    errors: list[str] = field(default_factory=list)
    seen: dict[str, set[int]] = field(default_factory=dict)
    checked: int = 0

    def fail(self, answer: Answer, message: str) -> None:
        self.errors.append(f"{answer.label}: {answer.method} {answer.url} -> {answer.status}: {message}")

    @staticmethod
    def template(spec: dict, path: str) -> str | None:
        # /repositories/{id}/... is where GitHub's redirects and pagination links send a client
        # (NOTES.md; octokit/fixtures): the same resources as /repos/{owner}/{repo}/..., which the
        # description covers, addressed by id.
        path = _REPO_ID_PATH.sub("/repos/{owner}/{repo}", path)
        for template in spec["paths"]:
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "/?$"
            if re.match(pattern, path):
                return template
        return None

    def check(self, answer: Answer) -> None:
        self.checked += 1
        version = answer.headers.get("x-github-api-version-selected")
        if not version:
            self.fail(answer, "no x-github-api-version-selected header")
            return
        spec = spec_for(version)
        template = self.template(spec, urlsplit(answer.url).path)
        if template is None:
            self.fail(answer, "path not in the description")
            return
        self.seen.setdefault(template, set()).add(answer.status)
        if answer.expect is not None and answer.status != answer.expect:
            self.fail(answer, f"expected status {answer.expect}")
        operation = spec["paths"][template].get(answer.method.lower())
        if operation is None:
            self.fail(answer, f"{answer.method} not described for {template}")
            return
        response = operation["responses"].get(str(answer.status))
        if response is None:
            if answer.status not in UNDESCRIBED_STATUSES:
                self.fail(answer, f"status not described for {answer.method} {template}")
                return
            if answer.status == 304:
                response = {"description": "Not modified"}
            else:
                basic = {"$ref": "#/components/schemas/basic-error"}
                response = {"content": {"application/json": {"schema": basic}}}
        response = resolve(spec, response)
        self._check_headers(spec, answer, template, response)
        self._check_body(spec, answer, template, response)

    def _check_body(self, spec: dict, answer: Answer, template: str, response: dict) -> None:
        content = response.get("content") or {}
        if not content:
            if answer.body:
                self.fail(answer, f"the description has no body here, got {answer.body[:80]!r}")
            return
        media = answer.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in content:
            self.fail(answer, f"content-type {media!r} not among {sorted(content)}")
            return
        try:
            body = json.loads(answer.body)
        except ValueError:
            self.fail(answer, f"body is not JSON: {answer.body[:80]!r}")
            return
        schema = content[media]["schema"]
        variant = MEDIA_VARIANTS.get((template, answer.status, answer.accept))
        if variant is not None:
            schema = resolve(spec, schema)["anyOf"][variant]
        for err in validator(answer.headers["x-github-api-version-selected"], schema).iter_errors(body):
            where = "/".join(str(p) for p in err.absolute_path) or "(body)"
            self.fail(answer, f"{where}: {err.message[:300]}")

    def _check_headers(self, spec: dict, answer: Answer, template: str, response: dict) -> None:
        for name, header in (response.get("headers") or {}).items():
            value = answer.headers.get(name.lower())
            if value is None:
                continue  # the description marks none of them required
            schema = resolve(spec, header).get("schema", {})
            if schema.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
                self.fail(answer, f"header {name}: {value!r} is not an integer")
            if name.lower() == "link":
                self._check_link(answer, template.rsplit("/", 1)[-1], value)

    def _check_link(self, answer: Answer, listed: str, value: str) -> None:
        base = "{0.scheme}://{0.netloc}".format(urlsplit(answer.url))
        for part in value.split(", "):
            m = LINK_PART.match(part)
            if not m:
                self.fail(answer, f'link part {part!r} is not <url>; rel="..."')
                continue
            url = LINK_URL.match(m.group(1))
            if not url or url.group("base") != base or url.group("sub") != listed:
                self.fail(answer, f"link {m.group(1)!r} is not {base}/repositories/{{id}}/{listed}?...")
            elif "page" not in dict(parse_qsl(url.group("query"))):
                self.fail(answer, f"link {m.group(1)!r} has no page parameter")


def resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        target: object = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]  # type: ignore[index]
        node = target  # type: ignore[assignment]
    return node


@cache
def _root_validator(version: str) -> OAS30ReadValidator:
    return OAS30ReadValidator(spec_for(version), format_checker=oas30_format_checker)


def validator(version: str, schema: dict) -> OAS30ReadValidator:
    # evolved from a validator of the whole document, so "#/components/..." refs resolve
    return _root_validator(version).evolve(schema=schema)


# ---------------------------------------------------------------------- driving the emulator
class Driver:
    """Sends requests to one emulator and hands every answer to the checker."""

    def __init__(
        self, srv: EmulatorServer, checker: Checker, session: Callable[[str | None], requests.Session]
    ) -> None:
        self.srv = srv
        self.checker = checker
        self._new_session = session
        self._sessions: dict[str | None, requests.Session] = {}

    def session(self, token: str | None) -> requests.Session:
        if token not in self._sessions:
            self._sessions[token] = self._new_session(token)
        return self._sessions[token]

    def get(
        self,
        label: str,
        path_or_url: str,
        expect: int | None,
        *,
        token: str | None = EMU_TOKEN_COLLAB,
        accept: str = VND,
        etag: str | None = None,
    ) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self.srv.url + path_or_url
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        resp = self.session(token).get(url, headers=headers, allow_redirects=False, timeout=30)
        self.checker.check(Answer.of(label, resp, accept, expect))
        return resp

    def revalidate(self, label: str, path: str, *, accept: str = VND) -> None:
        """A 200 and then the same GET with its ETag: 304."""
        first = self.get(label, path, 200, accept=accept)
        self.get(f"{label} (revalidated)", path, 304, accept=accept, etag=first.headers.get("etag"))

    def walk(self, label: str, path: str, *, accept: str = VND, token: str | None = EMU_TOKEN_COLLAB) -> int:
        """Every page of a list, following rel="next" as given; returns the number of pages."""
        url: str | None = path
        pages = 0
        while url:
            resp = self.get(f"{label} page {pages + 1}", url, 200, accept=accept, token=token)
            pages += 1
            url = resp.links.get("next", {}).get("url")
            assert pages < 100, f"{label}: no end to the pages"
        return pages


def ok_repos(ds: Dataset) -> list[Repo]:
    repos = [ds.lookup_full_name(n)[0] for n in ds.repo_names()]
    return [r for r in repos if r is not None and r.kind == "ok"]


def drive_everything(drv: Driver, ds: Dataset) -> None:
    """Every endpoint the emulator serves from the description, with each status and media type."""
    repos = ok_repos(ds)
    big = max(repos, key=lambda r: len(r.stars))
    name = ds.full_name(big)
    lists = ("contributors", "forks", "stargazers", "subscribers")
    sizes = {"contributors": big.contributors, "forks": big.forks, "stargazers": big.stars}
    sizes["subscribers"] = big.watchers
    assert all(len(v) >= 2 for v in sizes.values()), "every list of the biggest repository has pages"
    # about three pages of each list, so first, middle and last pages all occur
    per_page = {sub: max(1, -(-len(items) // 3)) for sub, items in sizes.items()}

    # ---- the repository
    for accept in (VND, "application/json"):
        drv.get(f"repo ({accept})", f"/repos/{name}", 200, accept=accept)
    drv.get("repo by id", f"/repositories/{big.id}", 200)
    fork = next(ds.repos[f] for r in repos for _, f in r.forks)
    drv.get("a fork (parent, source)", f"/repos/{ds.full_name(fork)}", 200)
    org_owned = next(r for r in repos if ds.user_type(r.owner_id) == "Organization")
    drv.get("an organisation's repo", f"/repos/{ds.full_name(org_owned)}", 200)
    for key in ("empty", "too_large", "restricted_404", "restricted_403", "restricted_empty"):
        drv.get(f"{key} repo", f"/repos/{SPECIAL_REPOS[key]}", 200, token=EMU_TOKEN_PLAIN)
    drv.revalidate("repo", f"/repos/{name}")

    # ---- answers every repository path gives
    for sub in ("", *(f"/{s}" for s in lists), "/stargazers/count"):
        what = sub.lstrip("/") or "repo"
        drv.get(f"{what} of a renamed repo", f"/repos/{SPECIAL_REPOS['renamed']}{sub}", 301)
        drv.get(f"{what} of a missing repo", f"/repos/{SPECIAL_REPOS['missing']}{sub}", 404)
        drv.get(f"{what} of a DMCA-blocked repo", f"/repos/{SPECIAL_REPOS['blocked']}{sub}", 451)
        drv.get(f"{what} of a ToS-blocked repo", f"/repos/{SPECIAL_REPOS['tos']}{sub}", 403)

    # ---- lists, every page, by name and (through the links) by id
    for sub in lists:
        pages = drv.walk(sub, f"/repos/{name}/{sub}?per_page={per_page[sub]}")
        assert pages >= 2, sub
        drv.revalidate(sub, f"/repos/{name}/{sub}?per_page={per_page[sub]}")
        drv.get(f"{sub} by id", f"/repositories/{big.id}/{sub}?per_page={per_page[sub]}&page=2", 200)
    drv.walk("stargazers with starred_at", f"/repos/{name}/stargazers?per_page=5", accept=STAR)
    drv.get("stargazers beyond page 400", f"/repos/{name}/stargazers?page=401", 422)
    anon = next(r for r in repos if r.anonymous)
    drv.walk(
        "contributors with anonymous ones", f"/repos/{ds.full_name(anon)}/contributors?anon=1&per_page=100"
    )
    drv.get("forks by stars", f"/repos/{name}/forks?sort=stargazers&per_page=5", 200)
    drv.get("contributors of an empty repo", f"/repos/{SPECIAL_REPOS['empty']}/contributors", 204)
    drv.get("contributors of a huge repo", f"/repos/{SPECIAL_REPOS['too_large']}/contributors", 403)
    for key, status in (("restricted_404", 404), ("restricted_403", 403), ("restricted_empty", 200)):
        for sub in ("stargazers", "subscribers"):
            for accept in (VND, STAR) if sub == "stargazers" else (VND,):
                path = f"/repos/{SPECIAL_REPOS[key]}/{sub}"
                drv.get(f"{sub} hidden ({key}, {accept})", path, status, token=EMU_TOKEN_PLAIN, accept=accept)
        drv.get(
            f"star count of {key}",
            f"/repos/{SPECIAL_REPOS[key]}/stargazers/count",
            200,
            token=EMU_TOKEN_PLAIN,
        )

    # ---- the star count
    drv.get("star count", f"/repos/{name}/stargazers/count", 200)
    drv.get("star count by id", f"/repositories/{big.id}/stargazers/count", 200)
    drv.get("star count of an empty repo", f"/repos/{SPECIAL_REPOS['empty']}/stargazers/count", 200)
    drv.revalidate("star count", f"/repos/{name}/stargazers/count")

    # ---- accounts
    truth = ds.truth(collaborator_repos=("*",))["users"]
    by_type: dict[str, dict] = {}
    for profile in truth.values():
        by_type.setdefault(profile["type"], profile)
    assert set(by_type) == {"User", "Organization", "Bot"}
    for kind, profile in by_type.items():
        drv.get(f"{kind} by login", f"/users/{profile['login']}", 200)
        drv.get(f"{kind} by id", f"/user/{profile['id']}", 200)
    drv.get("unknown login", "/users/no-such-user-zz", 404)
    drv.get("unknown account id", "/user/1", 404)
    drv.revalidate("user by login", f"/users/{by_type['User']['login']}")
    drv.revalidate("user by id", f"/user/{by_type['User']['id']}")
    drv.revalidate("the authenticated user", "/user")
    drv.get("no token", "/user", 401, token=None)
    drv.get("bad token", "/user", 401, token="not-a-token")
    drv.get("bad token on a repo", f"/repos/{name}", 401, token="not-a-token")

    # ---- /rate_limit (free, so its ETag holds between two calls)
    drv.revalidate("rate limit", "/rate_limit")
    drv.get("rate limit, no token", "/rate_limit", 200, token=None)


def drive_limits(drv: Driver, ds: Dataset) -> None:
    """Primary limits (403 and 429), a secondary limit and injected 5xx answers."""
    name = ds.full_name(ok_repos(ds)[0])
    drv.get("last unit of a tiny budget", f"/repos/{name}", 200, token=EMU_TOKEN_TINY)
    drv.get("primary limit, 403", f"/repos/{name}", 403, token=EMU_TOKEN_TINY)
    drv.srv.set_faults(primary_limit_status=429)
    drv.get("primary limit, 429", f"/repos/{name}", 429, token=EMU_TOKEN_TINY)
    drv.srv.set_faults(secondary_rest_points_per_minute=1)
    drv.get("first point of a minute", f"/repos/{name}", 200)
    drv.get("secondary limit", f"/repos/{name}", 403)
    drv.srv.set_faults(secondary_rest_points_per_minute=900, fault_burst={"status": 502, "count": 1})
    drv.get("injected 502", f"/repos/{name}", 502)
    drv.srv.set_faults(fault_burst={"status": 503, "count": 1})
    drv.get("injected 503", f"/repos/{name}", 503)
    # GitHub's limit and error answers, injected (test_emulator_answers.py checks their details)
    for kind, status, options in (
        ("rest_primary", 403, {"status": 403}),
        ("rest_primary", 429, {"status": 429}),
        ("rest_secondary_403", 403, {"retry_after": "present"}),
        ("rest_secondary_429", 429, {"retry_after": "absent"}),
        ("rest_secondary_429", 429, {"retry_after": "blank"}),
        ("unauthorized", 401, {}),
    ):
        drv.srv.inject(kind, **options)
        drv.get(f"injected {kind} {options}", f"/repos/{name}", status)
        drv.srv.reset_quota()


@pytest.fixture
def checked(emu_server_factory, emu_client, emu_dataset) -> Checker:
    """Every answer of both emulators, checked (the limits get a server of their own)."""
    checker = Checker()
    drive_everything(Driver(emu_server_factory(), checker, emu_client), emu_dataset)
    tiny = TokenConfig(name="tiny", token=EMU_TOKEN_TINY, core_limit=1)
    limited = emu_server_factory(tokens=[*emu_tokens(), tiny])
    drive_limits(Driver(limited, checker, emu_client), emu_dataset)
    return checker


def test_rest_answers_follow_githubs_description(checked: Checker) -> None:
    errors = checked.errors
    print(f"{checked.checked} answers checked, {len(errors)} errors", *errors, sep="\n")
    assert not errors, f"{len(errors)} answers break GitHub's REST description (printed above)"
    # each endpoint gave each status it can give; and it is all in the description
    assert checked.seen == SERVED
    assert set(SERVED) <= set(raw_spec()["paths"])


# ---------------------------------------------------------------------- the check itself fails
def test_the_check_reports_broken_answers(emu_server, emu_client, emu_dataset) -> None:
    login = emu_dataset.login(ok_repos(emu_dataset)[0].owner_id)
    resp = emu_client().get(f"{emu_server.url}/users/{login}", headers={"Accept": VND})
    good = Answer.of("a user", resp, VND, 200)
    checker = Checker()
    checker.check(good)
    assert checker.errors == []

    def broken(label: str, **changes: object) -> Answer:
        return replace(good, label=label, **changes)

    user = json.loads(good.body)
    del user["login"]
    cases = {
        "no login": (broken("no login", body=json.dumps(user).encode()), "'login' is a required property"),
        "null count": (
            broken("null count", body=json.dumps({**user, "login": "x", "followers": None}).encode()),
            "followers",
        ),
        "text body": (
            broken("text body", headers={**good.headers, "content-type": "text/html"}),
            "content-type",
        ),
        "undescribed": (broken("undescribed", status=418), "status not described"),
        "451 not an error": (broken("451 not an error", status=451, body=b'{"message": 3}'), "message"),
        "empty 304 expected": (broken("304 with a body", status=304), "no body here"),
        "wrong status": (broken("wrong status", expect=404), "expected status 404"),
    }
    for label, (answer, needle) in cases.items():
        checker = Checker()
        checker.check(answer)
        assert any(needle in e for e in checker.errors), (label, checker.errors)

    # a stargazer page answered as plain users under the star media type
    repo = max(ok_repos(emu_dataset), key=lambda r: len(r.stars))
    url = f"{emu_server.url}/repos/{emu_dataset.full_name(repo)}/stargazers?per_page=2"
    plain = emu_client().get(url, headers={"Accept": VND})
    checker = Checker()
    checker.check(Answer.of("plain users", plain, VND, 200))
    assert checker.errors == []
    checker.check(Answer.of("plain users as stargazers", plain, STAR, 200))
    assert any("'starred_at' is a required property" in e for e in checker.errors), checker.errors
    # a list item without its login
    items = plain.json()
    del items[1]["login"]
    checker = Checker()
    checker.check(
        replace(Answer.of("an item without login", plain, VND, 200), body=json.dumps(items).encode())
    )
    assert any(": 1: 'login' is a required property" in e for e in checker.errors), checker.errors

    # a link that is not in GitHub's form
    checker = Checker()
    answer = Answer.of("a link by name", plain, VND, 200)
    by_name = f'<{emu_server.url}/repos/{emu_dataset.full_name(repo)}/stargazers?page=2>; rel="next"'
    checker.check(replace(answer, headers={**answer.headers, "link": by_name}))
    assert any("/repositories/{id}" in e for e in checker.errors), checker.errors
