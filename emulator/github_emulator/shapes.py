"""REST JSON representations (GitHub API version 2026-03-10) of the emulator's accounts and repos.

URLs inside bodies point at api.github.com as on GitHub; only headers that a client must follow
(link, location) use the emulator's own address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from .encoding import iso, node_id

if TYPE_CHECKING:
    from .data import Dataset, Repo

API = "https://api.github.com"
WEB = "https://github.com"


def avatar_url(uid: int, typename: str) -> str:
    # GitHub serves App bot avatars from /in/<app id>
    kind = "in" if typename == "Bot" else "u"
    return f"https://avatars.githubusercontent.com/{kind}/{uid}?v=4"


def html_url(login: str, typename: str) -> str:
    if typename == "Bot":
        return f"{WEB}/apps/{login.removesuffix('[bot]')}"
    return f"{WEB}/{login}"


def simple_user(ds: Dataset, uid: int) -> dict:
    """The user object embedded in lists (contributors, stargazers, owners): no profile fields."""
    typename = ds.user_type(uid) or "User"
    login = ds.login(uid)
    u = f"{API}/users/{quote(login)}"
    return {
        "login": login,
        "id": uid,
        "node_id": node_id(typename, uid),
        "avatar_url": avatar_url(uid, typename),
        "gravatar_id": "",
        "url": u,
        "html_url": html_url(login, typename),
        "followers_url": f"{u}/followers",
        "following_url": f"{u}/following{{/other_user}}",
        "gists_url": f"{u}/gists{{/gist_id}}",
        "starred_url": f"{u}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{u}/subscriptions",
        "organizations_url": f"{u}/orgs",
        "repos_url": f"{u}/repos",
        "events_url": f"{u}/events{{/privacy}}",
        "received_events_url": f"{u}/received_events",
        "type": typename,
        "user_view_type": "public",
        "site_admin": False,
    }


def full_user(ds: Dataset, uid: int) -> dict:
    """GET /users/{login} and /user/{id}."""
    p = ds.profile(uid)
    out = simple_user(ds, uid)
    for key in (
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
    ):
        out[key] = p[key]
    out["created_at"] = iso(p["created_at"])
    out["updated_at"] = iso(p["updated_at"])
    return out


def repo_json(ds: Dataset, repo: Repo, *, detail: bool = False) -> dict:
    """A repository as in list responses (forks); ``detail`` adds the fields of GET /repos/{o}/{r}."""
    full_name = ds.full_name(repo)
    owner = simple_user(ds, repo.owner_id)
    u = f"{API}/repos/{full_name}"
    stars = len(repo.stars)
    out = {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": full_name,
        "private": False,
        "owner": owner,
        "html_url": f"{WEB}/{full_name}",
        "description": repo.description,
        "fork": repo.parent_id is not None,
        "url": u,
        # the URL templates GitHub puts in every repository object (all required by its description)
        "forks_url": f"{u}/forks",
        "keys_url": f"{u}/keys{{/key_id}}",
        "collaborators_url": f"{u}/collaborators{{/collaborator}}",
        "teams_url": f"{u}/teams",
        "hooks_url": f"{u}/hooks",
        "issue_events_url": f"{u}/issues/events{{/number}}",
        "events_url": f"{u}/events",
        "assignees_url": f"{u}/assignees{{/user}}",
        "branches_url": f"{u}/branches{{/branch}}",
        "tags_url": f"{u}/tags",
        "blobs_url": f"{u}/git/blobs{{/sha}}",
        "git_tags_url": f"{u}/git/tags{{/sha}}",
        "git_refs_url": f"{u}/git/refs{{/sha}}",
        "trees_url": f"{u}/git/trees{{/sha}}",
        "statuses_url": f"{u}/statuses/{{sha}}",
        "languages_url": f"{u}/languages",
        "stargazers_url": f"{u}/stargazers",
        "contributors_url": f"{u}/contributors",
        "subscribers_url": f"{u}/subscribers",
        "subscription_url": f"{u}/subscription",
        "commits_url": f"{u}/commits{{/sha}}",
        "git_commits_url": f"{u}/git/commits{{/sha}}",
        "comments_url": f"{u}/comments{{/number}}",
        "issue_comment_url": f"{u}/issues/comments{{/number}}",
        "contents_url": f"{u}/contents/{{+path}}",
        "compare_url": f"{u}/compare/{{base}}...{{head}}",
        "merges_url": f"{u}/merges",
        "archive_url": f"{u}/{{archive_format}}{{/ref}}",
        "downloads_url": f"{u}/downloads",
        "issues_url": f"{u}/issues{{/number}}",
        "pulls_url": f"{u}/pulls{{/number}}",
        "milestones_url": f"{u}/milestones{{/number}}",
        "notifications_url": f"{u}/notifications{{?since,all,participating}}",
        "labels_url": f"{u}/labels{{/name}}",
        "releases_url": f"{u}/releases{{/id}}",
        "deployments_url": f"{u}/deployments",
        "created_at": iso(repo.created_at),
        "updated_at": iso(repo.updated_at),
        # GitHub counts creating a repository as its first push: an empty one has pushed_at too
        # (its description makes pushed_at a non-null date-time in GET /repos/{o}/{r})
        "pushed_at": iso(repo.pushed_at if repo.pushed_at is not None else repo.created_at),
        "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git",
        "clone_url": f"{WEB}/{full_name}.git",
        "svn_url": f"{WEB}/{full_name}",
        "homepage": repo.homepage,
        "size": repo.size,
        "stargazers_count": stars,
        "watchers_count": stars,  # GitHub's watchers_count is the star count (legacy naming)
        "language": repo.language,
        # no has_downloads: API version 2026-03-10 removed it (the description's breaking changes)
        "has_issues": True,
        "has_projects": True,
        "has_wiki": True,
        "has_pages": False,
        "has_discussions": False,
        "forks_count": len(repo.forks),
        "mirror_url": None,
        "archived": False,
        "disabled": False,
        "open_issues_count": repo.size % 97,
        "license": None,
        "allow_forking": True,
        "is_template": False,
        "web_commit_signoff_required": False,
        "topics": [],
        "visibility": "public",
        "forks": len(repo.forks),
        "open_issues": repo.size % 97,
        "watchers": stars,
        "default_branch": "main",
    }
    if detail:
        # forks_count is the direct forks; network_count the whole network of the root repository
        out["network_count"] = ds.network_count(ds.network_root(repo))
        out["subscribers_count"] = len(repo.watchers)
        if owner["type"] == "Organization":
            out["organization"] = owner
        if repo.parent_id is not None:
            parent = ds.repos[repo.parent_id]
            out["parent"] = repo_json(ds, parent)
            root = parent
            while root.parent_id is not None:
                root = ds.repos[root.parent_id]
            out["source"] = repo_json(ds, root)
    return out
