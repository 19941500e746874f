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
from pathlib import Path

from github_collector.queries import RELATIONS

# GitHub logins: ASCII letters, digits and single inner hyphens, at most 39 characters.
# Repository names: letters, digits, '.', '-', '_' (at most 100), and not only dots.
OWNER_RE = r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}"
NAME_RE = r"[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*"
REPO_PATTERN = rf"^{OWNER_RE}/{NAME_RE}$"
_REPO = re.compile(REPO_PATTERN)
MAX_REPO_LEN = 140
MAX_REPOS = 10_000
BATCH_MIN, BATCH_MAX = 1, 500

DEFAULT_RELATIONS = ["contributors", "forkers", "stargazers", "watchers"]
DEFAULT_REPOS_FILE = Path(__file__).resolve().parents[2] / "include" / "repositories.json"
FALLBACK_REPOS = ["apache/airflow"]


class InvalidInput(ValueError):
    """A run parameter is not acceptable; the message names the value."""


def default_repositories(path: Path | None = None) -> list[str]:
    """The Params form's default list: a packaged file, read from local disk only.

    GITHUB_REPO_USERS_REPOS_FILE points at another file (the local stand-alone Airflow uses
    it to default to the emulator's repositories).
    """
    path = path or Path(os.environ.get("GITHUB_REPO_USERS_REPOS_FILE") or DEFAULT_REPOS_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return list(FALLBACK_REPOS)
    repos = data.get("repositories", data) if isinstance(data, dict) else data
    return [str(r) for r in repos] if isinstance(repos, list) and repos else list(FALLBACK_REPOS)


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


def build_plan(
    repositories: object,
    relations: object,
    batch_size: object,
    full_refresh: object = False,
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
        "batches": batches,
    }


def params_schema() -> dict:
    """JSON-schema pieces for the Params form; same rules as above."""
    return {
        "repositories": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_REPOS,
            "items": {"type": "string", "pattern": REPO_PATTERN, "minLength": 3, "maxLength": MAX_REPO_LEN},
        },
        "relations": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "enum": list(RELATIONS)},
        },
        "batch_size": {"type": "integer", "minimum": BATCH_MIN, "maximum": BATCH_MAX},
        "full_refresh": {"type": "boolean"},
    }
