"""Validate and normalise a run's input, and split the repositories into batches.

The same rules back the Params form (as JSON-schema) and the plan task (in Python), so a
value the form lets through by another path (CLI conf, API) still fails before any side
effect, with a message that names it.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from importlib import resources
from pathlib import Path

from github_collector.queries import DEFAULT_MAX_AUTHOR_PAGES, RELATIONS

# GitHub logins: ASCII letters, digits and single inner hyphens, at most 39 characters.
# Repository names: letters, digits, '.', '-', '_' (at most 100), and not only dots.
OWNER_RE = r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}"
NAME_RE = r"[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*"
REPO_PATTERN = rf"^{OWNER_RE}/{NAME_RE}$"
_REPO = re.compile(REPO_PATTERN)
MAX_REPO_LEN = 140
MAX_REPOS = 10_000
BATCH_MIN, BATCH_MAX = 1, 500

# Every relation: the author relations and contributors and forkers work with any token, and
# stargazers and watchers are listed where the token may see them and recorded as restricted
# where it may not (which costs nothing more once a run has seen them hidden).
DEFAULT_RELATIONS = list(RELATIONS)
MAX_AUTHOR_PAGES_LIMIT = 100_000
REPOS_FILE_ENV = "GITHUB_REPO_USERS_REPOS_FILE"
PACKAGED_REPOS_FILE = "repositories.json"


class InvalidInput(ValueError):
    """A run parameter is not acceptable; the message names the value."""


class RepositoriesFileError(ValueError):
    """The default repository list cannot be used; the message names the file."""


def default_repositories(path: Path | None = None) -> list[str]:
    """The Params form's default list, read from local disk only (never the network).

    By default the list shipped inside the package (``github_collector/repositories.json``,
    found with importlib.resources, so it works from a wheel as from a plugins folder);
    GITHUB_REPO_USERS_REPOS_FILE points at another file (the local stand-alone Airflow uses
    it to default to the emulator's repositories). The file holds a JSON list of
    ``owner/name`` strings, or an object with such a list under ``repositories``.

    A missing, unreadable or malformed file raises RepositoriesFileError naming it: the DAG
    then fails to load, saying why, rather than quietly collecting other repositories.
    """
    override = path or os.environ.get(REPOS_FILE_ENV, "").strip()
    source = Path(override) if override else resources.files("github_collector") / PACKAGED_REPOS_FILE
    where = f"default repository list {str(source)!r}" + (
        f" (from {REPOS_FILE_ENV})" if override and not path else ""
    )
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise RepositoriesFileError(f"{where} cannot be read: {exc.strerror or type(exc).__name__}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RepositoriesFileError(f"{where} is not valid JSON: {exc}") from None
    repos = data.get("repositories") if isinstance(data, dict) else data
    if not isinstance(repos, list) or not repos:
        raise RepositoriesFileError(
            f"{where} must hold a non-empty JSON list of 'owner/name' strings "
            '(or {"repositories": [...]})'
        )
    if len(repos) > MAX_REPOS:
        raise RepositoriesFileError(f"{where} holds {len(repos)} repositories; at most {MAX_REPOS}")
    names = []
    for raw in repos:
        value = raw.strip() if isinstance(raw, str) else raw
        try:
            normalise_repo(value)
        except InvalidInput as exc:
            raise RepositoriesFileError(f"{where}: {exc}") from None
        names.append(value)
    return names


def normalise_repo(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidInput(f"repository {raw!r} is not a string of the form 'owner/name'")
    value = raw.strip()
    if len(value) > MAX_REPO_LEN:
        raise InvalidInput(f"repository {value[:60]!r}... is longer than {MAX_REPO_LEN} characters")
    # NFKC would turn look-alikes (fullwidth letters) into ASCII and silently change the
    # target; refuse anything that is not already plain ASCII instead.
    if not value.isascii() or unicodedata.normalize("NFKC", value) != value:
        raise InvalidInput(f"repository {value!r} contains non-ASCII characters; GitHub names are ASCII")
    if value.endswith(".git"):
        value = value[: -len(".git")]
    if not _REPO.match(value):
        raise InvalidInput(
            f"repository {value!r} is not of the form 'owner/name' "
            "(owner: letters, digits, inner hyphens; name: letters, digits, '.', '-', '_')"
        )
    return value.lower()  # GitHub names are case-insensitive: Apache/Airflow == apache/airflow


def validate_relations(raw: object) -> list[str]:
    if not isinstance(raw, list | tuple) or not raw:
        raise InvalidInput(f"relations {raw!r} must be a non-empty list drawn from {list(RELATIONS)}")
    bad = [r for r in raw if r not in RELATIONS]
    if bad:
        raise InvalidInput(f"unknown relation(s) {bad!r}; choose from {list(RELATIONS)}")
    twice = sorted({r for r in raw if raw.count(r) > 1})
    if twice:
        raise InvalidInput(f"relation(s) {twice!r} given more than once in {list(raw)!r}")
    return [r for r in RELATIONS if r in raw]


def validate_batch_size(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not BATCH_MIN <= raw <= BATCH_MAX:
        raise InvalidInput(f"batch_size {raw!r} must be an integer from {BATCH_MIN} to {BATCH_MAX}")
    return raw


def validate_max_author_pages(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_AUTHOR_PAGES_LIMIT:
        raise InvalidInput(
            f"max_author_pages {raw!r} must be an integer from 0 (no cap) to {MAX_AUTHOR_PAGES_LIMIT}"
        )
    return raw


def build_plan(
    repositories: object,
    relations: object,
    batch_size: object,
    full_refresh: object = False,
    max_author_pages: object = DEFAULT_MAX_AUTHOR_PAGES,
) -> dict:
    """Check everything, deduplicate, and batch. Raises InvalidInput before any side effect."""
    if not isinstance(repositories, list | tuple) or not repositories:
        raise InvalidInput(f"repositories {repositories!r} must be a non-empty list of 'owner/name' strings")
    if len(repositories) > MAX_REPOS:
        raise InvalidInput(f"{len(repositories)} repositories given; at most {MAX_REPOS} per run")
    if not isinstance(full_refresh, bool):
        raise InvalidInput(f"full_refresh {full_refresh!r} must be true or false")
    rels = validate_relations(relations)
    size = validate_batch_size(batch_size)
    cap = validate_max_author_pages(max_author_pages)
    repos: list[str] = []
    seen: set[str] = set()
    for raw in repositories:
        name = normalise_repo(raw)
        if name not in seen:
            seen.add(name)
            repos.append(name)
    batches = [repos[i : i + size] for i in range(0, len(repos), size)]
    return {
        "repositories": repos,
        "relations": rels,
        "batch_size": size,
        "full_refresh": full_refresh,
        "max_author_pages": cap,
        "batches": batches,
    }


def params_schema() -> dict:
    """JSON-schema of each Param: the rules above, with the title and description the trigger
    form shows.

    The form can carry plain words only in ``title`` (the label) and ``description`` (the
    text under the field): a refused value comes back as jsonschema's own message, which
    names the value (Airflow has no keyword for custom messages). So each description says
    exactly what is accepted.
    """
    return {
        "repositories": {
            "type": "array",
            "title": "Repositories (owner/name, one per line)",
            "description": f"1 to {MAX_REPOS:,} repositories, one per line with no blank lines, each "
            "written owner/name as on GitHub, e.g. apache/airflow. owner: 1 to 39 ASCII letters, "
            "digits and single hyphens, starting and ending with a letter or digit. name: ASCII "
            "letters, digits, '.', '-' and '_', not only dots. At most "
            f"{MAX_REPO_LEN} characters in all. Case does not matter, a trailing .git is dropped, "
            "and a repository given twice is collected once.",
            "minItems": 1,
            "maxItems": MAX_REPOS,
            "items": {"type": "string", "pattern": REPO_PATTERN, "minLength": 3, "maxLength": MAX_REPO_LEN},
        },
        "relations": {
            "type": "array",
            "title": "Relations to collect",
            "description": "One or more of contributors, forkers (fork owners), stargazers, "
            "watchers, issue_authors, pull_request_authors and discussion_authors (the people who "
            "opened issues, pull requests and discussions), each at most once. GitHub lists "
            "stargazers and watchers only to a repository's admins and collaborators; where they "
            "are hidden, the run records them as restricted. The others work with any token; an "
            "author relation of a repository with issues or discussions turned off is recorded "
            "as not applicable.",
            "minItems": 1,
            "uniqueItems": True,
            # examples makes Airflow's form a multi-select of these values
            "examples": list(RELATIONS),
            "items": {"type": "string", "enum": list(RELATIONS)},
        },
        "batch_size": {
            "type": "integer",
            "title": f"Batch size ({BATCH_MIN} to {BATCH_MAX})",
            "description": f"Repositories per batch: a whole number from {BATCH_MIN} to {BATCH_MAX}. "
            "A value outside that range is refused when you trigger, never changed. A batch is "
            "what a fetch slot takes and checkpoints; 50 share one summary query (the cheapest "
            "incremental runs).",
            # The bounds sit under allOf on purpose: Airflow 3's number input reads a top-level
            # minimum/maximum and silently clamps a typed value into them on blur (0 became 1).
            # Under allOf the trigger still validates them, and refuses 0 or 501 saying so.
            "allOf": [{"minimum": BATCH_MIN}, {"maximum": BATCH_MAX}],
        },
        "max_author_pages": {
            "type": "integer",
            "title": f"Pages per author list and run (0 = no cap, at most {MAX_AUTHOR_PAGES_LIMIT:,})",
            "description": "How many pages of 100 issues, pull requests or discussions one run reads "
            f"per repository: a whole number from 0 (no cap) to {MAX_AUTHOR_PAGES_LIMIT:,}, default "
            f"{DEFAULT_MAX_AUTHOR_PAGES}. A list cut short is recorded as partial, and the next run "
            "goes on from where this one stopped.",
            "allOf": [{"minimum": 0}, {"maximum": MAX_AUTHOR_PAGES_LIMIT}],
        },
        "full_refresh": {
            "type": "boolean",
            "title": "Full refresh",
            "description": "Off: a list whose count has not changed since its last complete "
            "listing is not listed again, and only profiles older than "
            "GITHUB_REPO_USERS_PROFILE_MAX_AGE_HOURS (default 168) are fetched again. On: re-list "
            "everything and refresh every profile.",
        },
    }
