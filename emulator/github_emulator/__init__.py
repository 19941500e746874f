"""Local emulator of the parts of GitHub's REST and GraphQL APIs the collector uses.

ds = build_dataset(DatasetSpec(seed=1, n_repos=20))
cfg = EmulatorConfig(tokens=[TokenConfig(name="t1", token="tok-abc", collaborator_repos=("*",))])
with EmulatorServer(ds, cfg) as srv:
    ...  # srv.url, srv.stats(), srv.request_log(), srv.reset_quota(), srv.set_faults(...)
ds.truth(token_name="t1")  # what a correct collector must end up with

Faults (all off by default; srv.set_faults(...) or POST /_emulator/faults at runtime, seeded by
fault_seed, counted in srv.stats()["faults"]): fault_502_rate, fault_burst, fault_slow_rate /
fault_slow_seconds, fault_bad_json_rate, fault_graphql_error_rate, fault_graphql_partial_rate,
fault_link_loop / fault_link_loop_to, fault_redirect_chain, fault_redirect_loop. app.py's docstring
lists what each does and what it costs.

GitHub's answers to limits and failures (ANSWER_KINDS, counted in srv.stats()["answers"]):
srv.inject(kind, count=1, token=None, **options) or POST /_emulator/inject for the next requests,
answer_rates for random ones. Quota, concurrency, secondary points and GraphQL CPU time are kept
per account (TokenConfig.account), and requests sent before a prescribed wait are counted as
early_requests. app.py's docstring describes each answer.
"""

from __future__ import annotations

from .accounting import NATURAL_ANSWERS
from .app import EmulatorApp, truth_json
from .config import (
    ANSWER_KINDS,
    AppConfig,
    EmulatorConfig,
    InstallationConfig,
    TokenConfig,
    parse_token_list,
    parse_token_spec,
)
from .cost import analyze, query_cost
from .data import (
    ALL_RELATIONS,
    AUTHOR_RELATIONS,
    CONTRIBUTOR_LINK_LIMIT,
    FIXTURE_OWNER,
    PRESETS,
    RELATIONS,
    RENAMED_REPO_NEW_NAME,
    RESTRICTED_RELATIONS,
    SPECIAL_REPOS,
    Dataset,
    DatasetSpec,
    Repo,
    build_dataset,
)
from .encoding import decode_node_id, node_id
from .schema import SDL_PATH, load_schema
from .server import EmulatorServer

__all__ = [
    "ALL_RELATIONS",
    "ANSWER_KINDS",
    "AUTHOR_RELATIONS",
    "CONTRIBUTOR_LINK_LIMIT",
    "FIXTURE_OWNER",
    "NATURAL_ANSWERS",
    "PRESETS",
    "RELATIONS",
    "RENAMED_REPO_NEW_NAME",
    "RESTRICTED_RELATIONS",
    "SDL_PATH",
    "SPECIAL_REPOS",
    "AppConfig",
    "Dataset",
    "DatasetSpec",
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorServer",
    "InstallationConfig",
    "Repo",
    "TokenConfig",
    "analyze",
    "build_dataset",
    "decode_node_id",
    "load_schema",
    "node_id",
    "parse_token_list",
    "parse_token_spec",
    "query_cost",
    "truth_json",
]
