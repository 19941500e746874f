"""Synthetic GitHub dataset: repositories, users and the relations between them.

Everything is deterministic from ``DatasetSpec`` (seed included). Relations are generated eagerly
(they are compact tuples), user profiles lazily from the user id, so 100k users cost little.

Id spaces (database ids):
  persons (type User)           PERSON_BASE + index, login "<stem>-<base36(index)>"
  organisations                 ORG_BASE + index,    login "<stem>-<base36(index)>-org"
  bots and fixed-login accounts explicit ids in ``Dataset._fixed``
  repositories (incl. forks)    REPO_BASE + sequence
Logins decode back to ids, so /users/{login} needs no login index.
"""

from __future__ import annotations

import random
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import names
from .encoding import from_base36, iso, to_base36
from .shapes import full_user

PERSON_BASE = 3_000_000
ORG_BASE = 2_000_000
FIXED_BASE = 1_500_000
SYNTH_BOT_BASE = 90_000_000
MANNEQUIN_BASE = 95_000_000  # placeholder accounts of imported repositories (never users)
REPO_BASE = 600_000_000

# Generated timestamps lie before DATASET_NOW; mutations advance a clock that starts after it,
# so anything added later sorts after everything generated.
DATASET_NOW = 1_782_864_000  # 2026-07-01T00:00:00Z
_EPOCH_2008 = 1_199_145_600
_EPOCH_2012 = 1_325_376_000
_EPOCH_2025 = 1_735_689_600

FIXTURE_OWNER = "emulator-fixtures"
SPECIAL_REPOS: dict[str, str] = {
    "renamed": f"{FIXTURE_OWNER}/old-name",  # REST 301 -> /repositories/{id}; GraphQL follows
    "missing": f"{FIXTURE_OWNER}/gone-for-good",  # REST 404; GraphQL NOT_FOUND
    "blocked": f"{FIXTURE_OWNER}/dmca-takedown",  # REST 451 everywhere; GraphQL FORBIDDEN
    "tos": f"{FIXTURE_OWNER}/tos-takedown",  # REST 403 with a block object everywhere; GraphQL FORBIDDEN
    "empty": f"{FIXTURE_OWNER}/empty-repo",  # contributors 204, no forks or stars
    "too_large": f"{FIXTURE_OWNER}/huge-history",  # contributors 403 "too large", rest works
    "restricted_404": f"{FIXTURE_OWNER}/stars-hidden-404",  # restricted lists answer 404
    "restricted_403": f"{FIXTURE_OWNER}/stars-hidden-403",  # restricted lists answer 403
    "restricted_empty": f"{FIXTURE_OWNER}/stars-hidden-empty",  # restricted lists answer 200 []
}
RENAMED_REPO_NEW_NAME = f"{FIXTURE_OWNER}/new-name"

RELATIONS = ("contributors", "forkers", "stargazers", "watchers")
# People who opened issues, pull requests and discussions: public lists, whatever the token.
AUTHOR_RELATIONS = ("issue_authors", "pull_request_authors", "discussion_authors")
ALL_RELATIONS = RELATIONS + AUTHOR_RELATIONS
# The Repo list each author relation reads.
AUTHORED_ITEMS = {
    "issue_authors": "issues",
    "pull_request_authors": "pulls",
    "discussion_authors": "discussions",
}
GHOST = 0  # author of an item whose account was deleted: GitHub answers author: null
# Relations GitHub now limits to collaborators (changelog 2026-06-30).
RESTRICTED_RELATIONS = ("stargazers", "watchers")
RESTRICTION_FORMS = ("404", "403", "empty")
# GitHub links only the top 500 contributors to accounts; the rest are anonymous.
CONTRIBUTOR_LINK_LIMIT = 500


@dataclass(frozen=True)
class DatasetSpec:
    seed: int = 1
    n_repos: int = 20  # ordinary repositories, besides SPECIAL_REPOS
    n_users: int = 2000  # approximate number of distinct accounts tied to the repositories
    max_per_repo: int = 5000  # cap for each relation of one repository
    max_contributors: int = 600  # contributor lists beyond 500 exercise the anonymous tail
    org_fraction: float = 0.02  # organisations, relative to n_users (they own repos and forks)
    extra_bots: int = 2  # synthetic bots besides the well-known ones
    anon_rate: float = 0.3  # share of repos with anonymous (unlinked) contributors
    tail_exponent: float = 1.1  # Zipf exponent of repo sizes: a few repos dominate
    special_repos: bool = True
    # Accounts deleted or suspended after they contributed: REST contributor lists still name
    # them, but nodes(ids:) answers NOT_FOUND and GET /users/{login} 404 (GitHub does both).
    deleted_accounts: int = 2
    # Organisations that enforce SAML single sign-on: their profile fields answer FORBIDDEN,
    # which nulls the fork node they own (owner is non-null); id, login and type still answer.
    saml_orgs: int = 2
    # Share of forks that have a fork of their own (a fork of a fork): GitHub counts those in
    # the parent's forkCount (the whole network), not in its forks connection.
    subfork_rate: float = 0.1
    # Issues, pull requests and discussions, their authors drawn with a heavy tail (a few
    # prolific authors, many one-off ones). Items scale with a repository's stars, up to
    # max_items; the ``big_item_repos`` largest repositories get ``big_items`` issues and
    # about as many pull requests. Drawn from generators of their own, so every other part of
    # the dataset stays what it was without them.
    authored_items: bool = True
    max_items: int = 1500
    big_item_repos: int = 0
    big_items: int = 12_000
    ghost_rate: float = 0.01  # items whose author's account was deleted (author: null)
    imported_rate: float = 0.2  # repositories imported from elsewhere: some items by mannequins
    no_issues_rate: float = 0.1  # repositories with issues disabled
    discussions_rate: float = 0.4  # repositories with discussions enabled


PRESETS: dict[str, DatasetSpec] = {
    "demo": DatasetSpec(n_repos=8, n_users=400, max_per_repo=300),
    "small": DatasetSpec(n_repos=20, n_users=3000, max_per_repo=2000),
    "bench": DatasetSpec(
        n_repos=40,
        n_users=100_000,
        max_per_repo=35_000,
        max_contributors=700,
        max_items=4000,
        big_item_repos=3,
    ),
}


@dataclass(slots=True, eq=False)
class Repo:
    id: int
    owner_id: int
    name: str
    created_at: int
    updated_at: int
    pushed_at: int | None
    description: str | None
    language: str | None
    size: int
    homepage: str | None = None
    parent_id: int | None = None
    kind: str = "ok"  # ok | blocked | empty | too_large
    block_reason: str = "dmca"  # of a blocked repo: dmca (REST 451) | tos (REST 403)
    restriction: str = "404"  # REST form of a restricted list: 404 | 403 | empty
    # (user_id, contributions), sorted by contributions desc then id
    contributors: list[tuple[int, int]] = field(default_factory=list)
    anonymous: list[tuple[int, str, str]] = field(default_factory=list)  # (contributions, email, name)
    forks: list[tuple[int, int]] = field(default_factory=list)  # (created_at, fork repo id), ascending
    stars: list[tuple[int, int]] = field(default_factory=list)  # (starred_at, user_id), ascending
    watchers: list[tuple[int, int]] = field(default_factory=list)  # (watch seq, user_id), ascending
    # (created_at, number, author id or GHOST), ascending; numbers shared by the three kinds
    issues: list[tuple[int, int, int]] = field(default_factory=list)
    pulls: list[tuple[int, int, int]] = field(default_factory=list)
    discussions: list[tuple[int, int, int]] = field(default_factory=list)
    has_issues: bool = True
    has_discussions: bool = False
    next_number: int = 1

    @property
    def is_empty(self) -> bool:
        return self.kind == "empty"


class _PersonSampler:
    """Draws person indices: mostly fresh accounts, sometimes an already active one (skewed to
    the earliest, i.e. most active), so users overlap across relations and repos."""

    def __init__(self, rng: random.Random, reuse: float) -> None:
        self.rng = rng
        self.reuse = reuse
        self.next = 0

    def draw(self, exclude: set[int]) -> int:
        for _ in range(8):
            if self.next and self.rng.random() < self.reuse:
                idx = int(self.next * self.rng.random() ** 2.5)
                if PERSON_BASE + idx not in exclude:
                    return PERSON_BASE + idx
            else:
                break
        self.next += 1
        return PERSON_BASE + self.next - 1


class Dataset:
    """The emulator's world. Read methods are safe to call while another thread mutates: every
    public method takes ``self.lock`` (re-entrant, so handlers may hold it across calls)."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.lock = threading.RLock()
        self.n_persons = 0
        self.n_orgs = 0
        self._fixed: dict[int, tuple[str, str]] = {}  # id -> (type, login)
        self._fixed_by_login: dict[str, int] = {}
        self._versions: dict[int, int] = {}  # touch_user count per id
        self._touched_at: dict[int, int] = {}
        self.repos: dict[int, Repo] = {}
        self._by_name: dict[tuple[int, str], int] = {}
        self._redirects: dict[tuple[int, str], int] = {}
        self._owned: dict[int, list[int]] = {}
        self.seed_repos: list[str] = []
        self.bot_ids: list[int] = []
        self._clock = DATASET_NOW + 86_400
        self._watch_seq = 0
        self._next_repo = REPO_BASE
        self._rng = random.Random(f"mutations:{spec.seed}")
        self._tokens: dict[str, tuple[str, ...]] = {}  # token name -> collaborator patterns
        self.deleted: set[int] = set()  # accounts GitHub no longer serves (see DatasetSpec)
        self.saml_orgs: set[int] = set()
        self.mannequins: dict[int, str] = {}  # id -> login; never accounts (no /users/{login})

    # ----------------------------------------------------------------- accounts
    def add_fixed_account(self, typename: str, login: str, uid: int | None = None) -> int:
        with self.lock:
            if login.lower() in self._fixed_by_login:
                return self._fixed_by_login[login.lower()]
            if uid is None:
                uid = FIXED_BASE + len(self._fixed)
                while uid in self._fixed:
                    uid += 1
            self._fixed[uid] = (typename, login)
            self._fixed_by_login[login.lower()] = uid
            return uid

    def user_type(self, uid: int) -> str | None:
        if uid in self._fixed:
            return self._fixed[uid][0]
        if PERSON_BASE <= uid < PERSON_BASE + self.n_persons:
            return "User"
        if ORG_BASE <= uid < ORG_BASE + self.n_orgs:
            return "Organization"
        return None

    def _hash(self, *parts: object) -> int:
        return zlib.crc32(":".join(str(p) for p in (self.spec.seed, *parts)).encode())

    def login(self, uid: int) -> str:
        if uid in self._fixed:
            return self._fixed[uid][1]
        if uid >= PERSON_BASE:
            stem = names.LOGIN_STEMS[self._hash("login", uid) % len(names.LOGIN_STEMS)]
            return f"{stem}-{to_base36(uid - PERSON_BASE)}"
        stem = names.ORG_STEMS[self._hash("org", uid) % len(names.ORG_STEMS)]
        return f"{stem}-{to_base36(uid - ORG_BASE)}-org"

    def user_id(self, login: str) -> int | None:
        """Case-insensitive login lookup (GitHub logins are case-insensitive)."""
        low = login.lower()
        with self.lock:
            if low in self._fixed_by_login:
                return self._fixed_by_login[low]
            parts = low.split("-")
            if len(parts) == 2:
                base = PERSON_BASE
            elif len(parts) == 3 and parts[2] == "org":
                base = ORG_BASE
            else:
                return None
            idx = from_base36(parts[1])
            if idx is None:
                return None
            uid = base + idx
            if self.user_type(uid) is None or uid in self._fixed:
                return None
            return uid if self.login(uid).lower() == low else None

    def profile(self, uid: int) -> dict:
        """Profile fields of an account (REST names; timestamps as epoch ints). Deterministic from
        (seed, id, touch count)."""
        typename = self.user_type(uid)
        if typename is None:
            raise KeyError(uid)
        version = self._versions.get(uid, 0)
        rng = random.Random(f"{self.spec.seed}:profile:{uid}:{version}")
        # created_at must not move when a profile is touched
        created = random.Random(f"{self.spec.seed}:created:{uid}").randint(_EPOCH_2008, _EPOCH_2025)
        updated = self._touched_at.get(uid) or rng.randint(created, DATASET_NOW - 86_400)
        login = self.login(uid)
        p: dict = {
            "login": login,
            "id": uid,
            "type": typename,
            "site_admin": False,
            "name": None,
            "company": None,
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "public_repos": 0,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": created,
            "updated_at": updated,
        }
        if typename == "Bot":
            return p
        if typename == "Organization":
            p["name"] = rng.choice(names.ORG_NAMES) if rng.random() < 0.9 else None
            p["blog"] = f"https://{login}.example.org" if rng.random() < 0.6 else ""
            p["location"] = rng.choice(names.LOCATIONS) if rng.random() < 0.5 else None
            p["email"] = f"contact@{login}.example.org" if rng.random() < 0.4 else None
            p["bio"] = rng.choice(names.BIOS) if rng.random() < 0.5 else None
            p["twitter_username"] = f"{login.replace('-', '_')[:15]}" if rng.random() < 0.3 else None
            p["public_repos"] = len(self._owned.get(uid, ())) + int(rng.paretovariate(1.2) * 5)
            p["followers"] = int(rng.paretovariate(1.1) * 10) - 10
            return p
        p["name"] = (
            f"{rng.choice(names.FIRST_NAMES)} {rng.choice(names.LAST_NAMES)}" if rng.random() < 0.85 else None
        )
        p["company"] = rng.choice(names.COMPANIES) if rng.random() < 0.45 else None
        p["blog"] = f"https://{login.lower()}.dev" if rng.random() < 0.4 else ""
        p["location"] = rng.choice(names.LOCATIONS) if rng.random() < 0.65 else None
        p["email"] = f"{login.lower()}@example.com" if rng.random() < 0.3 else None
        p["hireable"] = True if rng.random() < 0.35 else None
        p["bio"] = rng.choice(names.BIOS) if rng.random() < 0.5 else None
        p["twitter_username"] = f"{login.replace('-', '_')[:15]}" if rng.random() < 0.25 else None
        p["public_repos"] = len(self._owned.get(uid, ())) + int(rng.paretovariate(1.3) * 3) - 3
        p["public_gists"] = int(rng.paretovariate(1.5) * 2) - 2
        p["followers"] = int(rng.paretovariate(1.05) * 5) - 5
        p["following"] = int(rng.paretovariate(1.3) * 4) - 4
        return p

    # ----------------------------------------------------------------- repositories
    def full_name(self, repo: Repo) -> str:
        return f"{self.login(repo.owner_id)}/{repo.name}"

    def lookup(self, owner: str, name: str, follow_renames: bool = True) -> tuple[Repo | None, bool]:
        """Resolve owner/name case-insensitively. Returns (repo, moved): moved is True when the
        name is an old name of a renamed repository."""
        with self.lock:
            oid = self.user_id(owner)
            if oid is None:
                return None, False
            key = (oid, name.lower())
            rid = self._by_name.get(key)
            if rid is not None:
                return self.repos[rid], False
            rid = self._redirects.get(key)
            if rid is not None and follow_renames:
                return self.repos[rid], True
            return None, False

    def lookup_full_name(self, full_name: str) -> tuple[Repo | None, bool]:
        owner, _, name = full_name.partition("/")
        return self.lookup(owner, name)

    def _new_repo(self, owner_id: int, name: str, created: int, rng: random.Random, **kw) -> Repo:
        base, n = name, 1
        while (owner_id, name.lower()) in self._by_name or (owner_id, name.lower()) in self._redirects:
            name, n = f"{base}-{n}", n + 1
        pushed = rng.randint(created, max(created, DATASET_NOW - 3600)) if created < DATASET_NOW else created
        repo = Repo(
            id=self._next_repo,
            owner_id=owner_id,
            name=name,
            created_at=created,
            updated_at=max(pushed, created),
            pushed_at=pushed,
            description=rng.choice(names.DESCRIPTIONS),
            language=rng.choice(names.LANGUAGES),
            size=rng.randint(10, 90_000),
            homepage=f"https://{name}.example.org" if rng.random() < 0.2 else None,
            **kw,
        )
        self._next_repo += 1
        self.repos[repo.id] = repo
        self._by_name[(owner_id, name.lower())] = repo.id
        self._owned.setdefault(owner_id, []).append(repo.id)
        return repo

    def _fork(self, parent: Repo, owner_id: int, created: int, rng: random.Random) -> Repo:
        fork = self._new_repo(owner_id, parent.name, created, rng, parent_id=parent.id)
        fork.description, fork.language = parent.description, parent.language
        parent.forks.append((created, fork.id))
        return fork

    def is_collaborator(self, patterns: Iterable[str], repo: Repo) -> bool:
        """Collaborator patterns: "*" (every repo) or full names; old names of a renamed repo count."""
        return self.repo_matches(patterns, repo)

    def repo_matches(self, patterns: Iterable[str], repo: Repo) -> bool:
        """Whether repo is named by one of the patterns: "*" or full names (old names count)."""
        for pattern in patterns:
            if pattern == "*":
                return True
            found, _ = self.lookup_full_name(pattern)
            if found is repo:
                return True
        return False

    def restricted_relations(self, repo: Repo, patterns: Iterable[str]) -> tuple[str, ...]:
        """Relations hidden from a caller with these collaborator patterns. An empty list has nothing
        to hide and is served as empty (through GraphQL it could not be told apart anyway)."""
        if self.is_collaborator(patterns, repo):
            return ()
        members = {"stargazers": repo.stars, "watchers": repo.watchers}
        return tuple(r for r in RESTRICTED_RELATIONS if members[r])

    def network_root(self, repo: Repo) -> Repo:
        """The repository at the root of a fork network (itself when it is no fork)."""
        with self.lock:
            while repo.parent_id is not None and repo.parent_id in self.repos:
                repo = self.repos[repo.parent_id]
            return repo

    def network_count(self, repo: Repo) -> int:
        """Forks in the repository's fork network below it: its forks, their forks, and so on
        (GraphQL ``forkCount``). Its direct forks alone are ``repo.forks``."""
        with self.lock:
            total, todo = 0, [repo]
            while todo:
                r = todo.pop()
                total += len(r.forks)
                todo.extend(self.repos[f] for _, f in r.forks)
            return total

    def linked_contributors(self, repo: Repo) -> list[tuple[int, int]]:
        return repo.contributors[:CONTRIBUTOR_LINK_LIMIT]

    def repo_names(self) -> list[str]:
        """The repository list a product would be configured with (includes every special repo,
        the renamed one under its old name)."""
        return list(self.seed_repos)

    def owned_repos(self, uid: int) -> list[Repo]:
        with self.lock:
            return [self.repos[r] for r in self._owned.get(uid, ())]

    def viewer_id(self, token_name: str | None) -> int:
        """A stable person standing for the owner of a token (GraphQL viewer, GET /user)."""
        return PERSON_BASE + self._hash("viewer", token_name) % max(1, self.n_persons)

    # ----------------------------------------------------------------- generation
    def _generate(self) -> None:
        spec = self.spec
        rng = random.Random(spec.seed)
        sampler = _PersonSampler(rng, reuse=0.25)
        self.n_orgs = max(8, round(spec.n_users * spec.org_fraction))
        self.n_persons = 10**9  # sampler decides the final count; logins need a valid range meanwhile
        for login, uid in names.KNOWN_BOTS:
            self.bot_ids.append(self.add_fixed_account("Bot", login, uid))
        for i in range(spec.extra_bots):
            self.bot_ids.append(self.add_fixed_account("Bot", f"emu-ci-{i}[bot]", SYNTH_BOT_BASE + i))

        # Star counts follow a Zipf law over a shuffled rank so big repos are spread in the list.
        ranks = list(range(spec.n_repos))
        rng.shuffle(ranks)
        weights = [1.0 / (r + 1) ** spec.tail_exponent for r in ranks]
        total_w = sum(weights) or 1.0
        star_total = spec.n_users * 1.0
        for i in range(spec.n_repos):
            owner = ORG_BASE + rng.randrange(self.n_orgs) if rng.random() < 0.6 else sampler.draw(set())
            name = f"{rng.choice(names.REPO_WORDS_A)}-{rng.choice(names.REPO_WORDS_B)}"
            repo = self._new_repo(
                owner,
                name,
                rng.randint(_EPOCH_2012, _EPOCH_2025),
                rng,
                restriction=rng.choice(RESTRICTION_FORMS),
            )
            stars = min(spec.max_per_repo, round(star_total * weights[i] / total_w))
            if ranks[i] == spec.n_repos - 1 and spec.n_repos > 3:
                stars = 0  # the smallest repo has no stars at all
            self._populate(
                repo,
                rng,
                sampler,
                stars=stars,
                forks=min(spec.max_per_repo, round(stars * rng.uniform(0.1, 0.35))),
                watchers=min(spec.max_per_repo, round(stars * rng.uniform(0.02, 0.08)) + (stars > 0)),
                contributors=min(
                    spec.max_contributors, spec.max_per_repo, 1 + round(stars * rng.uniform(0.01, 0.06))
                ),
            )
            self.seed_repos.append(self.full_name(repo))
        if spec.special_repos:
            self._generate_specials(rng, sampler)
        self.n_persons = max(sampler.next, 1)
        self._pick_unreachable(rng)
        if spec.authored_items:
            self._generate_authored()

    def _pick_unreachable(self, rng: random.Random) -> None:
        """Choose the deleted accounts and the SAML organisations among the seed repos' users."""
        seeds = [
            r
            for r in (self.lookup_full_name(n)[0] for n in self.seed_repos)
            if r is not None and r.kind == "ok"
        ]
        elsewhere: set[int] = {r.owner_id for r in self.repos.values()}
        for r in self.repos.values():
            elsewhere.update(self.repos[f].owner_id for _, f in r.forks)
            elsewhere.update(u for _, u in r.stars)
            elsewhere.update(u for _, u in r.watchers)
        # Only contributors named nowhere else: GitHub drops a deleted account from its lists.
        only_contributing = sorted(
            {u for r in seeds for u, _ in self.linked_contributors(r)} - elsewhere - set(self._fixed)
        )
        rng.shuffle(only_contributing)
        self.deleted = set(only_contributing[: self.spec.deleted_accounts])
        fork_orgs = sorted(
            {
                self.repos[f].owner_id
                for r in seeds
                for _, f in r.forks
                if self.user_type(self.repos[f].owner_id) == "Organization"
            }
        )
        rng.shuffle(fork_orgs)
        self.saml_orgs = set(fork_orgs[: self.spec.saml_orgs])

    def _generate_specials(self, rng: random.Random, sampler: _PersonSampler) -> None:
        owner = self.add_fixed_account("Organization", FIXTURE_OWNER)

        def make(
            key: str,
            name: str,
            kind: str = "ok",
            restriction: str = "404",
            block_reason: str = "dmca",
            **sizes: int,
        ) -> Repo:
            repo = self._new_repo(
                owner,
                name,
                rng.randint(_EPOCH_2012, _EPOCH_2025),
                rng,
                kind=kind,
                restriction=restriction,
                block_reason=block_reason,
            )
            self._populate(repo, rng, sampler, **sizes)
            self.seed_repos.append(SPECIAL_REPOS[key])
            return repo

        renamed = make("renamed", "old-name", contributors=12, forks=6, stars=40, watchers=8)
        self._rename(renamed, owner, RENAMED_REPO_NEW_NAME.split("/")[1])
        self.seed_repos.append(SPECIAL_REPOS["missing"])
        make("blocked", "dmca-takedown", kind="blocked", contributors=5, forks=2, stars=10, watchers=2)
        empty = make("empty", "empty-repo", kind="empty")
        empty.pushed_at, empty.size, empty.language = None, 0, None
        make("too_large", "huge-history", kind="too_large", contributors=60, forks=5, stars=30, watchers=4)
        for form, key in (
            ("404", "restricted_404"),
            ("403", "restricted_403"),
            ("empty", "restricted_empty"),
        ):
            make(key, f"stars-hidden-{form}", restriction=form, contributors=5, forks=3, stars=25, watchers=6)
        # Made last and without relations (a blocked repo shows none), so every other repository,
        # account and id stays what it was before this one existed.
        make("tos", "tos-takedown", kind="blocked", block_reason="tos")

    def _populate(
        self,
        repo: Repo,
        rng: random.Random,
        sampler: _PersonSampler,
        *,
        contributors: int = 0,
        forks: int = 0,
        stars: int = 0,
        watchers: int = 0,
    ) -> None:
        now = DATASET_NOW
        contrib: dict[int, int] = {}
        if contributors and self.user_type(repo.owner_id) == "User":
            contrib[repo.owner_id] = 0
        if contributors > 3:
            for bot in rng.sample(self.bot_ids, k=min(len(self.bot_ids), rng.randint(0, 2))):
                contrib[bot] = 0
        while len(contrib) < contributors:
            contrib[sampler.draw(set(contrib))] = 0
        for uid in contrib:
            contrib[uid] = 1 + int((rng.paretovariate(1.1) - 1) * 3)
        if repo.owner_id in contrib:
            contrib[repo.owner_id] = max(contrib.values()) * 2 + 50
        repo.contributors = sorted(contrib.items(), key=lambda kv: (-kv[1], kv[0]))
        if contributors and rng.random() < self.spec.anon_rate:
            for n in range(rng.randint(1, 4)):
                first = rng.choice(names.FIRST_NAMES)
                repo.anonymous.append((rng.randint(1, 40), f"{first.lower()}.{n}@example.net", first))

        humans = [u for u in contrib if self.user_type(u) == "User"]
        chosen: set[int] = set()
        times = sorted(rng.randint(repo.created_at, now) for _ in range(stars))
        for t in times:
            if humans and rng.random() < 0.2:
                uid = rng.choice(humans)
                if uid in chosen:
                    uid = sampler.draw(chosen)
            else:
                uid = sampler.draw(chosen)
            chosen.add(uid)
            repo.stars.append((t, uid))

        pool = humans + [u for _, u in repo.stars]
        watching: set[int] = set()
        for _ in range(watchers):
            uid = rng.choice(pool) if pool and rng.random() < 0.5 else sampler.draw(watching)
            if uid in watching:
                uid = sampler.draw(watching)
            watching.add(uid)
            self._watch_seq += 1
            repo.watchers.append((self._watch_seq, uid))

        forkers: set[int] = {repo.owner_id}
        for t in sorted(rng.randint(repo.created_at, now) for _ in range(forks)):
            r = rng.random()
            if r < 0.08:
                uid = ORG_BASE + rng.randrange(self.n_orgs)
            elif r < 0.23 and repo.stars:
                uid = rng.choice(repo.stars)[1]
            else:
                uid = sampler.draw(forkers)
            if uid in forkers:
                uid = sampler.draw(forkers)
            forkers.add(uid)
            fork = self._fork(repo, uid, t, rng)
            # Some forks are forked in turn: in the parent's network (forkCount), not among its
            # direct forks (the forkers list). Drawn from their own generator, so adding them
            # leaves every other account, repository and relation of the dataset as it was.
            sub = random.Random(f"{self.spec.seed}:subfork:{fork.id}")
            if sub.random() < self.spec.subfork_rate:
                owner = PERSON_BASE + sub.randrange(max(1, sampler.next))
                if owner != uid:
                    self._fork(fork, owner, sub.randint(t, max(t, now)), sub)

    # ----------------------------------------------------------------- authored items
    def _generate_authored(self) -> None:
        """Issues, pull requests and discussions of the seed repositories, with their authors."""
        spec = self.spec
        seeds = [
            r
            for r in (self.lookup_full_name(n)[0] for n in self.seed_repos)
            if r is not None and r.kind in ("ok", "too_large") and r.parent_id is None
        ]
        by_size = sorted(seeds, key=lambda r: (-len(r.stars), r.id))
        big = {r.id for r in by_size[: spec.big_item_repos]}
        # The largest repository shows every odd author (a ghost, a bot, a mannequin), so even
        # a small dataset has each.
        showcase = by_size[0].id if by_size else None
        for repo in seeds:
            rng = random.Random(f"{spec.seed}:authored:{repo.id}")
            stars = len(repo.stars)
            if repo.id in big:
                n_issues = int(spec.big_items * rng.uniform(1.0, 1.3))
                n_pulls = int(spec.big_items * rng.uniform(0.6, 1.1))
            else:
                n_issues = min(spec.max_items, round(stars * rng.uniform(0.1, 0.6)))
                n_pulls = min(spec.max_items, round(stars * rng.uniform(0.05, 0.4) + len(repo.contributors)))
            repo.has_issues = repo.id in big or rng.random() >= spec.no_issues_rate
            repo.has_discussions = rng.random() < spec.discussions_rate
            n_disc = round(n_issues * rng.uniform(0.05, 0.3)) if repo.has_discussions else 0
            if not repo.has_issues:
                n_issues = 0
            imported = rng.random() < spec.imported_rate or repo.id == showcase
            mannequins = []
            if imported:
                for _ in range(rng.randint(1, 4)):
                    mid = MANNEQUIN_BASE + len(self.mannequins)
                    self.mannequins[mid] = f"imported-{to_base36(mid - MANNEQUIN_BASE)}"
                    mannequins.append(mid)
            kinds = ["issues"] * n_issues + ["pulls"] * n_pulls + ["discussions"] * n_disc
            rng.shuffle(kinds)
            # One number sequence for the three kinds, as on GitHub; a few items share their
            # second with the one before (two items created in the same second).
            times = sorted(rng.randint(repo.created_at, DATASET_NOW - 60) for _ in kinds)
            for i in range(1, len(times)):
                if rng.random() < 0.02:
                    times[i] = times[i - 1]
            regulars: list[int] = []
            humans = [u for u, _ in repo.contributors if self.user_type(u) == "User"]
            for number, (kind, t) in enumerate(zip(kinds, times, strict=True), start=1):
                author = self._draw_author(rng, repo, kind, regulars, humans, mannequins)
                getattr(repo, kind).append((t, number, author))
            repo.next_number = len(kinds) + 1
            if repo.id == showcase and len(repo.pulls) >= 3:
                odd = [GHOST, self.bot_ids[0] if self.bot_ids else GHOST, mannequins[0]]
                repo.pulls[:3] = [(t, n, a) for (t, n, _), a in zip(repo.pulls[:3], odd, strict=True)]

    def _draw_author(
        self,
        rng: random.Random,
        repo: Repo,
        kind: str,
        regulars: list[int],
        humans: list[int],
        mannequins: list[int],
    ) -> int:
        """An item's author: heavy-tailed (regulars come back, skewed to the earliest), a few
        bots (more on pull requests), mannequins in imported repositories, ghosts."""
        r = rng.random()
        if r < self.spec.ghost_rate:
            return GHOST
        if mannequins and rng.random() < 0.05:
            return rng.choice(mannequins)
        if self.bot_ids and rng.random() < (0.15 if kind == "pulls" else 0.01):
            return rng.choice(self.bot_ids)
        if regulars and rng.random() < 0.35:
            return regulars[int(len(regulars) * rng.random() ** 3)]
        for _ in range(8):
            pick = rng.random()
            if humans and pick < 0.3:
                uid = rng.choice(humans)
            elif repo.stars and pick < 0.6:
                uid = rng.choice(repo.stars)[1]
            else:
                uid = PERSON_BASE + rng.randrange(max(1, self.n_persons))
            if uid not in self.deleted and self.user_type(uid) == "User" and uid not in self._fixed:
                regulars.append(uid)
                return uid
        return GHOST

    def items(self, repo: Repo, relation: str) -> list[tuple[int, int, int]]:
        """What GitHub lists of a repository's authored items (none while the feature is off)."""
        if relation == "issue_authors" and not repo.has_issues:
            return []
        if relation == "discussion_authors" and not repo.has_discussions:
            return []
        return getattr(repo, AUTHORED_ITEMS[relation])

    def not_applicable(self, repo: Repo) -> list[str]:
        """Author relations a repository does not have: issues or discussions turned off."""
        out = []
        if not repo.has_issues:
            out.append("issue_authors")
        if not repo.has_discussions:
            out.append("discussion_authors")
        return out

    def add_items(
        self,
        full_name: str,
        relation: str,
        n: int,
        *,
        ghosts: int = 0,
        bots: int = 0,
        same_second: bool = False,
    ) -> list[int]:
        """n new items of a relation (issue_authors...), ``ghosts`` of them by deleted accounts
        and ``bots`` by bots, the others by people (half new to the repository). With
        ``same_second`` all are created in one second, the newest already stored one's if
        it is the newest item (the high-water mark's own second). Returns the author ids."""
        with self.lock:
            repo = self._require(full_name)
            items = getattr(repo, AUTHORED_ITEMS[relation])
            people = self._some_persons(max(0, n - ghosts - bots), {a for _, _, a in items})
            authors = [GHOST] * ghosts + [self.bot_ids[i % len(self.bot_ids)] for i in range(bots)] + people
            t = self._tick()
            if same_second and items:
                t = items[-1][0]
            number = repo.next_number
            for author in authors:
                items.append((t if same_second else self._tick(), number, author))
                number += 1
            repo.next_number = number
            items.sort()
            return authors

    def set_features(
        self, full_name: str, issues: bool | None = None, discussions: bool | None = None
    ) -> None:
        with self.lock:
            repo = self._require(full_name)
            if issues is not None:
                repo.has_issues = bool(issues)
            if discussions is not None:
                repo.has_discussions = bool(discussions)

    # ----------------------------------------------------------------- mutations
    def _tick(self) -> int:
        self._clock += 60
        return self._clock

    def _require(self, full_name: str) -> Repo:
        repo, _ = self.lookup_full_name(full_name)
        if repo is None:
            raise KeyError(f"unknown repository {full_name!r}")
        return repo

    def _new_person(self) -> int:
        self.n_persons += 1
        return PERSON_BASE + self.n_persons - 1

    def _some_persons(self, n: int, exclude: set[int]) -> list[int]:
        """Half brand-new accounts, half existing ones not yet in the relation."""
        out: list[int] = []
        for i in range(n):
            uid = None
            if i % 2 and self.n_persons > len(exclude) + 1:
                for _ in range(10):
                    cand = PERSON_BASE + self._rng.randrange(self.n_persons)
                    if cand not in exclude and cand not in self.deleted:
                        uid = cand
                        break
            if uid is None:
                uid = self._new_person()
            exclude.add(uid)
            out.append(uid)
        return out

    def add_forks(self, full_name: str, n: int) -> list[str]:
        with self.lock:
            repo = self._require(full_name)
            owners = {self.repos[f].owner_id for _, f in repo.forks} | {repo.owner_id}
            made = [self._fork(repo, uid, self._tick(), self._rng) for uid in self._some_persons(n, owners)]
            return [self.full_name(f) for f in made]

    def add_stargazers(self, full_name: str, n: int) -> list[int]:
        with self.lock:
            repo = self._require(full_name)
            new = self._some_persons(n, {u for _, u in repo.stars})
            repo.stars.extend((self._tick(), uid) for uid in new)
            return new

    def add_watchers(self, full_name: str, n: int) -> list[int]:
        with self.lock:
            repo = self._require(full_name)
            new = self._some_persons(n, {u for _, u in repo.watchers})
            for uid in new:
                self._watch_seq += 1
                repo.watchers.append((self._watch_seq, uid))
            return new

    def remove_stargazers(self, full_name: str, n: int) -> list[int]:
        """n users unstar (spread over the list, oldest stars included); returns their ids."""
        with self.lock:
            repo = self._require(full_name)
            gone = self._pick(repo.stars, n)
            repo.stars = [s for s in repo.stars if s[1] not in gone]
            return sorted(gone)

    def remove_watchers(self, full_name: str, n: int) -> list[int]:
        """n users stop watching; returns their ids."""
        with self.lock:
            repo = self._require(full_name)
            gone = self._pick(repo.watchers, n)
            repo.watchers = [w for w in repo.watchers if w[1] not in gone]
            return sorted(gone)

    def remove_forks(self, full_name: str, n: int) -> list[int]:
        """n direct forks are deleted (their own forks stay, as on GitHub, where the network
        gets a new root); returns the ids of the owners who no longer have a fork of it."""
        with self.lock:
            repo = self._require(full_name)
            chosen = self._pick(repo.forks, n)
            repo.forks = [f for f in repo.forks if f[1] not in chosen]
            owners = set()
            for fid in chosen:
                fork = self.repos.pop(fid)
                self._by_name.pop((fork.owner_id, fork.name.lower()), None)
                self._owned.get(fork.owner_id, []).remove(fid)
                for _, child in fork.forks:
                    self.repos[child].parent_id = None
                owners.add(fork.owner_id)
            remaining = {self.repos[f].owner_id for _, f in repo.forks}
            return sorted(owners - remaining)

    def _pick(self, items: list[tuple[int, int]], n: int) -> set[int]:
        """The second member of n random items (a user id, or a fork's repository id)."""
        if n <= 0 or not items:
            return set()
        return {items[i][1] for i in self._rng.sample(range(len(items)), min(n, len(items)))}

    def add_contributors(self, full_name: str, n: int) -> list[int]:
        with self.lock:
            repo = self._require(full_name)
            new = self._some_persons(n, {u for u, _ in repo.contributors})
            merged = repo.contributors + [(uid, self._rng.randint(1, 50)) for uid in new]
            repo.contributors = sorted(merged, key=lambda kv: (-kv[1], kv[0]))
            repo.pushed_at = repo.updated_at = self._tick()
            return new

    def _rename(self, repo: Repo, new_owner: int, new_name: str) -> None:
        old_key = (repo.owner_id, repo.name.lower())
        new_key = (new_owner, new_name.lower())
        if new_key in self._by_name and self._by_name[new_key] != repo.id:
            raise ValueError(f"{self.login(new_owner)}/{new_name} already exists")
        del self._by_name[old_key]
        self._redirects[old_key] = repo.id
        self._redirects.pop(new_key, None)
        self._by_name[new_key] = repo.id
        if new_owner != repo.owner_id:
            self._owned[repo.owner_id].remove(repo.id)
            self._owned.setdefault(new_owner, []).append(repo.id)
        repo.owner_id, repo.name = new_owner, new_name

    def rename_repo(self, old_full_name: str, new_full_name: str) -> None:
        """Rename (or transfer, when the owner differs) a repository; the old name then redirects.
        An unknown new owner is created as an organisation."""
        with self.lock:
            repo = self._require(old_full_name)
            owner, _, name = new_full_name.partition("/")
            if not owner or not name:
                raise ValueError(f"bad repository name {new_full_name!r}")
            oid = self.user_id(owner)
            if oid is None:
                oid = self.add_fixed_account("Organization", owner)
            self._rename(repo, oid, name)
            repo.updated_at = self._tick()

    def touch_user(self, login: str) -> dict:
        """Change an account's profile fields and bump its updated_at; returns the new REST profile."""
        with self.lock:
            uid = self.user_id(login)
            if uid is None:
                raise KeyError(f"unknown user {login!r}")
            self._versions[uid] = self._versions.get(uid, 0) + 1
            self._touched_at[uid] = self._tick()
            return full_user(self, uid)

    def mutate(self, op: str, **kw) -> object:
        """Dispatch used by POST /_emulator/mutate."""
        ops = {
            "add_forks": self.add_forks,
            "add_stargazers": self.add_stargazers,
            "add_watchers": self.add_watchers,
            "add_contributors": self.add_contributors,
            "remove_stargazers": self.remove_stargazers,
            "remove_watchers": self.remove_watchers,
            "remove_forks": self.remove_forks,
            "rename_repo": self.rename_repo,
            "touch_user": self.touch_user,
            "add_items": self.add_items,
            "set_features": self.set_features,
        }
        if op not in ops:
            raise ValueError(f"unknown op {op!r}; one of {sorted(ops)}")
        return ops[op](**kw)

    # ----------------------------------------------------------------- ground truth
    def register_tokens(self, tokens: Iterable) -> None:
        """Remember each token's collaborator patterns so truth() can be asked by token name."""
        with self.lock:
            for t in tokens:
                self._tokens[t.name] = tuple(t.collaborator_repos)

    def truth(
        self,
        relations: Iterable[str] = RELATIONS,
        token_name: str | None = None,
        *,
        collaborator_repos: Iterable[str] | None = None,
        repos: Iterable[str] | None = None,
    ) -> dict:
        """What a correct collector run with this token must end up with.

        Returns {"repos": {requested_full_name: {"repo_id": int|None, "full_name": str|None,
                                                 "status": str, "restricted": [relation, ...]}},
                 "users": {user_id: full REST profile (as GET /users/{login})},
                 "gone": [user_id of deleted accounts: a collector gets only their list item],
                 "saml_orgs": [user_id of SAML organisations: GraphQL gives only id, login, type],
                 "repo_users": {(repo_id, user_id): {"relations": set[str],
                                                     "contributions": int|None,
                                                     "starred_at": ISO str|None,
                                                     "authored": {relation: {"items": int,
                                                                  "first": ISO str, "last": ISO str}}}}}

        - requested names default to ``repo_names()``; status is ok | moved (renamed; full_name is
          the new name) | not_found | blocked | empty | too_large. not_found and blocked repos
          have repo_id and full_name None and no relations.
        - relations: contributors (only the top 500, which GitHub links to accounts; never for
          too_large or empty repos; anonymous entries never), forkers (owners of direct forks,
          users and organisations), stargazers (with starred_at), watchers.
        - a relation hidden from the token (stargazers/watchers unless it is a collaborator, and
          only when the list is not empty) is listed in "restricted" and contributes no users.
        - author relations (issue_authors, pull_request_authors, discussion_authors) tie users and
          bots to the items they opened, with the count and the first and last creation time.
          Per repository, "not_applicable" names those whose feature is off, and
          "authorless" counts, per relation, the items by deleted accounts ("ghost") and by
          mannequins ("Mannequin"), which tie no user.
        - token_name refers to a token registered by EmulatorServer (or register_tokens);
          collaborator_repos overrides it; None for both means an unauthenticated caller.
        """
        wanted = set(relations)
        unknown = wanted - set(ALL_RELATIONS)
        if unknown:
            raise ValueError(f"unknown relations {sorted(unknown)}")
        with self.lock:
            if collaborator_repos is None:
                if token_name is not None and token_name not in self._tokens:
                    raise KeyError(f"token {token_name!r} is not registered")
                collaborator_repos = self._tokens.get(token_name, ()) if token_name else ()
            patterns = tuple(collaborator_repos)
            authored = bool(wanted & set(AUTHOR_RELATIONS))
            out_repos: dict[str, dict] = {}
            repo_users: dict[tuple[int, int], dict] = {}

            def tie(
                repo: Repo,
                uid: int,
                relation: str,
                contributions: int | None = None,
                starred_at: int | None = None,
            ) -> None:
                entry = repo_users.setdefault(
                    (repo.id, uid), {"relations": set(), "contributions": None, "starred_at": None}
                )
                entry["relations"].add(relation)
                if contributions is not None:
                    entry["contributions"] = contributions
                if starred_at is not None:
                    entry["starred_at"] = iso(starred_at)

            for requested in self.repo_names() if repos is None else repos:
                repo, moved = self.lookup_full_name(requested)
                if repo is None or repo.kind == "blocked":
                    out_repos[requested] = {
                        "repo_id": None,
                        "full_name": None,
                        "restricted": [],
                        "status": "not_found" if repo is None else "blocked",
                        **({"not_applicable": [], "authorless": {}} if authored else {}),
                    }
                    continue
                hidden = [r for r in self.restricted_relations(repo, patterns) if r in wanted]
                out_repos[requested] = {
                    "repo_id": repo.id,
                    "full_name": self.full_name(repo),
                    "status": "moved" if moved else repo.kind,
                    "restricted": hidden,
                }
                if authored:
                    out_repos[requested]["not_applicable"] = [
                        r for r in self.not_applicable(repo) if r in wanted
                    ]
                    out_repos[requested]["authorless"] = {}
                if "contributors" in wanted and repo.kind == "ok":
                    for uid, n in self.linked_contributors(repo):
                        tie(repo, uid, "contributors", contributions=n)
                if "forkers" in wanted:
                    for _, fid in repo.forks:
                        tie(repo, self.repos[fid].owner_id, "forkers")
                if "stargazers" in wanted and "stargazers" not in hidden:
                    for t, uid in repo.stars:
                        tie(repo, uid, "stargazers", starred_at=t)
                if "watchers" in wanted and "watchers" not in hidden:
                    for _, uid in repo.watchers:
                        tie(repo, uid, "watchers")
                for rel in AUTHOR_RELATIONS:
                    if rel not in wanted:
                        continue
                    authorless: dict[str, int] = {}
                    for t, _, author in self.items(repo, rel):
                        if author == GHOST or author in self.mannequins:
                            kind = "ghost" if author == GHOST else "Mannequin"
                            authorless[kind] = authorless.get(kind, 0) + 1
                            continue
                        tie(repo, author, rel)
                        got = (
                            repo_users[(repo.id, author)]
                            .setdefault("authored", {})
                            .setdefault(rel, {"items": 0, "first": iso(t), "last": iso(t)})
                        )
                        got["items"] += 1
                        got["first"] = min(got["first"], iso(t))
                        got["last"] = max(got["last"], iso(t))
                    if authorless:
                        out_repos[requested]["authorless"][rel] = authorless
            users = {uid: full_user(self, uid) for uid in sorted({u for _, u in repo_users})}
            return {
                "repos": out_repos,
                "users": users,
                "repo_users": repo_users,
                "gone": sorted(self.deleted & set(users)),
                "saml_orgs": sorted(self.saml_orgs & set(users)),
            }


def build_dataset(spec: DatasetSpec | None = None) -> Dataset:
    ds = Dataset(spec or DatasetSpec())
    with ds.lock:
        ds._generate()
    return ds
