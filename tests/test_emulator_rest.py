"""REST routes of the emulator, over HTTP."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from fixtures_emulator import *  # noqa: F403
from fixtures_emulator import EMU_TOKEN_COLLAB, EMU_TOKEN_PLAIN

from github_emulator import RENAMED_REPO_NEW_NAME, SPECIAL_REPOS
from github_emulator.encoding import iso

pytestmark = pytest.mark.integration

LINK_PART = re.compile(r'^<(http://127\.0\.0\.1:\d+/[^>]+)>; rel="(next|last|prev|first)"$')


def biggest(ds, attr: str):
    repos = [ds.lookup_full_name(n)[0] for n in ds.repo_names()]
    return max((r for r in repos if r is not None and r.kind == "ok"), key=lambda r: len(getattr(r, attr)))


def parse_link(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(", "):
        m = LINK_PART.match(part)
        assert m, f"bad link part {part!r}"
        out[m.group(2)] = m.group(1)
    return out


def test_repo_object(emu_server, emu_client, emu_dataset) -> None:
    repo = biggest(emu_dataset, "stars")
    name = emu_dataset.full_name(repo)
    r = emu_client().get(f"{emu_server.url}/repos/{name.upper()}")  # case-insensitive
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == repo.id and body["full_name"] == name
    assert body["stargazers_count"] == body["watchers_count"] == len(repo.stars)
    assert body["subscribers_count"] == len(repo.watchers) and body["forks_count"] == len(repo.forks)
    assert body["owner"]["login"] == emu_dataset.login(repo.owner_id)
    assert {"node_id", "private", "fork", "created_at", "updated_at", "pushed_at"} <= set(body)
    by_id = emu_client().get(f"{emu_server.url}/repositories/{repo.id}").json()
    assert by_id == body


def test_pagination_follows_link_headers(emu_server, emu_client, emu_dataset) -> None:
    repo = biggest(emu_dataset, "stars")
    assert len(repo.stars) > 20
    s = emu_client()
    url = f"{emu_server.url}/repos/{emu_dataset.full_name(repo)}/stargazers?per_page=7&foo=bar"
    seen, pages = [], 0
    while url:
        r = s.get(url)
        assert r.status_code == 200
        pages += 1
        seen += [u["id"] for u in r.json()]
        links = parse_link(r.headers["link"])
        for link in links.values():
            # GitHub's links address the repository by id, whatever path the client used
            assert urlsplit(link).path == f"/repositories/{repo.id}/stargazers"
            query = parse_qs(urlsplit(link).query)
            assert query["per_page"] == ["7"] and query["foo"] == ["bar"]  # other params kept
        if pages == 1:
            assert set(links) == {"next", "last"}
            assert r.headers["link"].index('rel="next"') < r.headers["link"].index('rel="last"')
        elif "next" in links:
            assert set(links) == {"prev", "next", "last", "first"}
        else:
            assert set(links) == {"prev", "first"}
        url = links.get("next")
    assert seen == [u for _, u in repo.stars]  # oldest star first, nothing lost or repeated
    assert pages == -(-len(repo.stars) // 7)


def test_links_address_the_repository_by_id(emu_server, emu_client, emu_dataset) -> None:
    """Every list's links go to {the base URL the client used}/repositories/{id}/{list}?...,
    whichever form of the path the client asked, and those URLs serve the same pages."""
    s = emu_client()
    renamed = emu_dataset.lookup_full_name(RENAMED_REPO_NEW_NAME)[0]
    for name, repo in ((SPECIAL_REPOS["renamed"], renamed), (RENAMED_REPO_NEW_NAME, renamed)):
        for sub, size in (
            ("contributors", len(renamed.contributors)),
            ("forks", len(renamed.forks)),
            ("stargazers", len(renamed.stars)),
            ("subscribers", len(renamed.watchers)),
        ):
            per_page = max(1, size // 3)
            by_name = f"{emu_server.url}/repos/{name}/{sub}?anon=1&per_page={per_page}"
            r = s.get(by_name)  # the old name's 301 followed
            links = parse_link(r.headers["link"])
            expected = f"{emu_server.url}/repositories/{repo.id}/{sub}?anon=1&per_page={per_page}&page="
            assert links["next"] == f"{expected}2" and links["last"].startswith(expected), links
            seen, url = [], by_name
            while url:
                r = s.get(url)
                seen += r.json()
                url = r.links.get("next", {}).get("url")
            everything = s.get(f"{emu_server.url}/repos/{RENAMED_REPO_NEW_NAME}/{sub}?anon=1&per_page=100")
            assert seen == everything.json() and len(seen) == size
    # the base URL is the one the client addressed
    big = biggest(emu_dataset, "stars")
    r = s.get(
        f"{emu_server.url}/repos/{emu_dataset.full_name(big)}/stargazers?per_page=2",
        headers={"Host": "api.example.test:8443"},
    )
    assert (
        r.links["next"]["url"]
        == f"http://api.example.test:8443/repositories/{big.id}/stargazers?per_page=2&page=2"
    )


def test_star_count(emu_server, emu_client, emu_dataset) -> None:
    big = biggest(emu_dataset, "stars")
    s, plain = emu_client(), emu_client(EMU_TOKEN_PLAIN)
    base = emu_server.url
    r = s.get(f"{base}/repos/{emu_dataset.full_name(big)}/stargazers/count")
    assert r.status_code == 200 and r.json() == {"count": len(big.stars)}
    assert s.get(f"{base}/repositories/{big.id}/stargazers/count").json() == {"count": len(big.stars)}
    hidden = emu_dataset.lookup_full_name(SPECIAL_REPOS["restricted_403"])[0]
    r = plain.get(f"{base}/repos/{SPECIAL_REPOS['restricted_403']}/stargazers/count")
    assert r.json() == {"count": len(hidden.stars)} and len(hidden.stars) > 0  # the count stays public
    renamed = emu_dataset.lookup_full_name(RENAMED_REPO_NEW_NAME)[0]
    r = s.get(f"{base}/repos/{SPECIAL_REPOS['renamed']}/stargazers/count", allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == f"{base}/repositories/{renamed.id}/stargazers/count"
    assert s.get(r.headers["location"]).json() == {"count": len(renamed.stars)}
    assert s.get(f"{base}/repos/{SPECIAL_REPOS['missing']}/stargazers/count").status_code == 404
    assert s.get(f"{base}/repos/{SPECIAL_REPOS['empty']}/stargazers/count").json() == {"count": 0}
    assert s.get(f"{base}/repos/{emu_dataset.full_name(big)}/stargazers/counts").status_code == 404
    assert emu_server.stats()["tokens"]["collab"]["core"]["used"] == 7  # 1 unit each, as any REST GET


def test_per_page_default_and_clamp(emu_server, emu_client, emu_dataset) -> None:
    repo = biggest(emu_dataset, "stars")
    assert len(repo.stars) > 100
    s = emu_client()
    base = f"{emu_server.url}/repos/{emu_dataset.full_name(repo)}/stargazers"
    assert len(s.get(base).json()) == 30
    r = s.get(base, params={"per_page": 500})
    assert len(r.json()) == 100
    assert len(s.get(base, params={"per_page": 100, "page": 2}).json()) == min(100, len(repo.stars) - 100)
    single = emu_client().get(f"{emu_server.url}/repos/{SPECIAL_REPOS['restricted_404']}/forks")
    assert single.status_code == 200 and "link" not in single.headers  # one page: no link header


def test_etag_revalidation_is_free(emu_server, emu_client, emu_dataset) -> None:
    s = emu_client()
    url = f"{emu_server.url}/repos/{emu_dataset.repo_names()[0]}/forks"
    first = s.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    remaining = int(first.headers["x-ratelimit-remaining"])
    again = s.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert int(again.headers["x-ratelimit-remaining"]) == remaining
    assert again.headers["x-ratelimit-resource"] == "core"
    other = emu_client(EMU_TOKEN_PLAIN).get(url)
    assert other.json() == first.json() and other.headers["etag"] != etag  # ETags depend on the token
    assert emu_client(EMU_TOKEN_PLAIN).get(url, headers={"If-None-Match": etag}).status_code == 200
    stats = emu_server.stats()
    assert stats["requests_by_status"]["304"] == 1
    assert stats["tokens"]["collab"]["core"]["used"] == 1


def test_renamed_repo_redirects_every_path(emu_server, emu_client, emu_dataset) -> None:
    s = emu_client()
    new = emu_dataset.lookup_full_name(RENAMED_REPO_NEW_NAME)[0]
    r = s.get(f"{emu_server.url}/repos/{SPECIAL_REPOS['renamed']}", allow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == f"{emu_server.url}/repositories/{new.id}"
    r = s.get(
        f"{emu_server.url}/repos/{SPECIAL_REPOS['renamed']}/contributors?per_page=5&anon=1",
        allow_redirects=False,
    )
    assert r.status_code == 301
    assert r.headers["location"] == f"{emu_server.url}/repositories/{new.id}/contributors?per_page=5&anon=1"
    followed = s.get(f"{emu_server.url}/repos/{SPECIAL_REPOS['renamed']}")
    assert followed.status_code == 200 and followed.json()["full_name"] == RENAMED_REPO_NEW_NAME
    assert s.get(f"{emu_server.url}/repos/{RENAMED_REPO_NEW_NAME}").json()["id"] == new.id


def test_missing_blocked_empty_too_large(emu_server, emu_client, emu_dataset) -> None:
    s = emu_client()
    base = emu_server.url
    r = s.get(f"{base}/repos/{SPECIAL_REPOS['missing']}")
    assert r.status_code == 404 and r.json()["message"] == "Not Found" and "documentation_url" in r.json()
    tos_id = emu_dataset.lookup_full_name(SPECIAL_REPOS["tos"])[0].id
    for path in ("", "/contributors", "/forks", "/stargazers", "/subscribers", "/stargazers/count"):
        r = s.get(f"{base}/repos/{SPECIAL_REPOS['blocked']}{path}")
        assert r.status_code == 451
        assert r.json()["message"] == "Repository access blocked" and r.json()["block"]["reason"] == "dmca"
        # a terms-of-service block: 403 with the same message and a block object, by name or id
        for url in (f"{base}/repos/{SPECIAL_REPOS['tos']}{path}", f"{base}/repositories/{tos_id}{path}"):
            r = s.get(url)
            assert r.status_code == 403, url
            assert r.json()["message"] == "Repository access blocked" and r.json()["block"]["reason"] == "tos"
            assert int(r.headers["x-ratelimit-remaining"]) > 0  # not a rate limit
    r = s.get(f"{base}/repos/{SPECIAL_REPOS['empty']}/contributors")
    assert r.status_code == 204 and r.content == b""
    assert s.get(f"{base}/repos/{SPECIAL_REPOS['empty']}/forks").json() == []
    assert s.get(f"{base}/repos/{SPECIAL_REPOS['empty']}/stargazers").json() == []
    r = s.get(f"{base}/repos/{SPECIAL_REPOS['too_large']}/contributors")
    assert r.status_code == 403
    assert r.json()["message"].startswith("The history or contributor list is too large")
    assert int(r.headers["x-ratelimit-remaining"]) > 0  # not a rate limit
    assert s.get(f"{base}/repos/{SPECIAL_REPOS['too_large']}/forks").status_code == 200
    assert len(s.get(f"{base}/repos/{SPECIAL_REPOS['too_large']}/stargazers").json()) > 0


def test_restricted_lists_vary_per_repo(emu_server, emu_client, emu_dataset) -> None:
    plain, collab = emu_client(EMU_TOKEN_PLAIN), emu_client(EMU_TOKEN_COLLAB)
    base = emu_server.url
    for key, status in (("restricted_404", 404), ("restricted_403", 403), ("restricted_empty", 200)):
        for sub in ("stargazers", "subscribers"):
            r = plain.get(f"{base}/repos/{SPECIAL_REPOS[key]}/{sub}")
            assert r.status_code == status, (key, sub)
            if status == 200:
                assert r.json() == [] and "link" not in r.headers
            ok = collab.get(f"{base}/repos/{SPECIAL_REPOS[key]}/{sub}")
            assert ok.status_code == 200 and len(ok.json()) > 0
        repo = plain.get(f"{base}/repos/{SPECIAL_REPOS[key]}").json()
        assert repo["stargazers_count"] > 0  # counts stay visible
    # ordinary repos use all three forms too
    forms = {emu_dataset.lookup_full_name(n)[0].restriction for n in emu_dataset.repo_names()[:10]}
    assert len(forms) >= 2
    anon = emu_client(None).get(f"{base}/repos/{SPECIAL_REPOS['restricted_403']}/stargazers")
    assert anon.status_code == 403


def test_starred_at_media_type_and_page_limit(emu_server, emu_client, emu_dataset) -> None:
    repo = biggest(emu_dataset, "stars")
    url = f"{emu_server.url}/repos/{emu_dataset.full_name(repo)}/stargazers"
    s = emu_client()
    r = s.get(url, params={"per_page": 3}, headers={"Accept": "application/vnd.github.star+json"})
    body = r.json()
    assert [(e["starred_at"], e["user"]["id"]) for e in body] == [(iso(t), u) for t, u in repo.stars[:3]]
    assert set(body[0]["user"]) >= {"login", "id", "node_id", "avatar_url", "type", "site_admin"}
    assert "name" not in body[0]["user"]  # list items carry no profile fields
    r = s.get(url, params={"page": 401})
    assert r.status_code == 422 and "pagination is limited" in r.json()["message"]


def test_contributors_sorted_with_anonymous_entries(emu_server, emu_client, emu_dataset) -> None:
    repo = max(
        (
            emu_dataset.lookup_full_name(n)[0]
            for n in emu_dataset.repo_names()
            if emu_dataset.lookup_full_name(n)[0]
            and emu_dataset.lookup_full_name(n)[0].kind == "ok"
            and emu_dataset.lookup_full_name(n)[0].anonymous
        ),
        key=lambda r: len(r.contributors),
    )
    s = emu_client()
    url = f"{emu_server.url}/repos/{emu_dataset.full_name(repo)}/contributors"
    plain = s.get(url, params={"per_page": 100}).json()
    assert [c["id"] for c in plain] == [u for u, _ in repo.contributors[:100]]
    counts = [c["contributions"] for c in plain]
    assert counts == sorted(counts, reverse=True)
    with_anon = s.get(url, params={"per_page": 100, "anon": "true"}).json()
    anon = [c for c in with_anon if c["type"] == "Anonymous"]
    assert len(anon) == len(repo.anonymous) and all({"email", "name"} <= set(c) for c in anon)
    assert [c["contributions"] for c in with_anon] == sorted(
        (c["contributions"] for c in with_anon), reverse=True
    )
    assert any(c["type"] == "Bot" and c["login"].endswith("[bot]") for c in plain) or not any(
        emu_dataset.user_type(u) == "Bot" for u, _ in repo.contributors
    )


def test_forks_sort_orders(emu_server, emu_client, emu_dataset) -> None:
    repo = biggest(emu_dataset, "forks")
    s = emu_client()
    url = f"{emu_server.url}/repos/{emu_dataset.full_name(repo)}/forks"
    oldest = [f["id"] for f in s.get(url, params={"sort": "oldest", "per_page": 100}).json()]
    newest = [f["id"] for f in s.get(url, params={"per_page": 100}).json()]
    assert oldest == [f for _, f in repo.forks][:100]
    assert newest == [f for _, f in reversed(repo.forks)][:100]
    item = s.get(url, params={"per_page": 1}).json()[0]
    assert item["fork"] is True and item["owner"]["type"] in ("User", "Organization")
    assert s.get(url, params={"sort": "stargazers"}).status_code == 200


def test_user_profiles(emu_server, emu_client, emu_dataset) -> None:
    s = emu_client()
    truth = emu_dataset.truth(collaborator_repos=("*",))["users"]
    by_type = {}
    for profile in truth.values():
        by_type.setdefault(profile["type"], profile)
    for profile in by_type.values():
        r = s.get(f"{emu_server.url}/users/{profile['login']}")
        assert r.status_code == 200 and r.json() == profile
        assert s.get(f"{emu_server.url}/user/{profile['id']}").json() == profile
    assert set(by_type) == {"User", "Organization", "Bot"}
    user = by_type["User"]
    assert s.get(f"{emu_server.url}/users/{user['login'].upper()}").json()["id"] == user["id"]
    assert s.get(f"{emu_server.url}/users/renovate%5Bbot%5D").json()["type"] == "Bot"
    for key in (
        "login",
        "id",
        "node_id",
        "avatar_url",
        "type",
        "site_admin",
        "name",
        "company",
        "blog",
        "location",
        "email",
        "hireable",
        "bio",
        "twitter_username",
        "public_repos",
        "public_gists",
        "followers",
        "following",
        "created_at",
        "updated_at",
    ):
        assert key in user
    assert s.get(f"{emu_server.url}/users/no-such-user-zz").status_code == 404
    assert s.get(f"{emu_server.url}/user/1").status_code == 404


def test_headers_on_every_response(emu_server, emu_client) -> None:
    s = emu_client()
    for path in (
        "/rate_limit",
        f"/repos/{SPECIAL_REPOS['missing']}",
        f"/repos/{SPECIAL_REPOS['blocked']}",
        "/nope",
    ):
        r = s.get(emu_server.url + path)
        for h in (
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-used",
            "x-ratelimit-reset",
            "x-ratelimit-resource",
            "x-github-request-id",
        ):
            assert h in r.headers, (path, h)
        assert r.headers["x-ratelimit-reset"].isdigit()


def test_rate_limit_endpoint_is_free(emu_server, emu_client) -> None:
    s = emu_client()
    for _ in range(3):
        body = s.get(f"{emu_server.url}/rate_limit").json()
    assert "rate" not in body
    assert body["resources"]["core"] == {
        **body["resources"]["core"],
        "limit": 5000,
        "used": 0,
        "remaining": 5000,
    }
    assert body["resources"]["graphql"]["limit"] == 5000 and "search" in body["resources"]
    anon = emu_client(None).get(f"{emu_server.url}/rate_limit").json()
    assert anon["resources"]["core"]["limit"] == 60


def test_bad_and_revoked_tokens(emu_server, emu_client) -> None:
    r = emu_client("not-a-token").get(f"{emu_server.url}/repos/{SPECIAL_REPOS['empty']}")
    assert r.status_code == 401 and r.json()["message"] == "Bad credentials"
    s = emu_client()
    assert s.get(f"{emu_server.url}/rate_limit").status_code == 200
    emu_server.set_token_valid("collab", False)
    assert s.get(f"{emu_server.url}/rate_limit").status_code == 401
    emu_server.set_token_valid("collab", True)
    # the alternative header form works too
    assert (
        emu_client(None)
        .get(f"{emu_server.url}/rate_limit", headers={"Authorization": f"token {EMU_TOKEN_COLLAB}"})
        .status_code
        == 200
    )
    assert emu_server.request_log()[-2]["status"] == 401 and emu_server.request_log()[-2]["token"] == "collab"


def test_unauthenticated_budget_is_60(emu_server, emu_client) -> None:
    r = emu_client(None).get(f"{emu_server.url}/repos/{SPECIAL_REPOS['empty']}")
    assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "60"
    assert r.headers["x-ratelimit-remaining"] == "59"
