"""
### GitHub repository users

Collects the users tied to each chosen GitHub repository — contributors, fork owners,
stargazers and watchers where GitHub allows it — with their full profiles, inside GitHub's
API quota, into Postgres.

1. **plan** checks the Params, deduplicates the repositories and splits them into batches.
2. a fixed number of mapped **fetch slots** (`GITHUB_REPO_USERS_FETCH_SLOTS`, default 8) take
   the batches one at a time. Per slot, **quota_gate** (RateLimitSensor) waits, deferred,
   until the token pool covers the slot's next batch, then reserves that budget; **fetch**
   collects batches into Redis with a checkpoint after every page, and defers itself until
   the reset if quota runs out. Slots with no batch left are skipped.
3. **commit** upserts everything staged into Postgres on (repo, user), even when a batch
   failed, then fails the run if one did.

Stargazer and watcher lists are visible only to a repository's admins and collaborators
(GitHub, 2026-06-30). Where they are hidden, the repository's `unavailable_relations` says
so; they are never stored as empty.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import Asset, Param, TriggerRule, dag, task, task_group

from github_collector import settings
from github_collector.operators import FetchBatchOperator
from github_collector.plan import DEFAULT_RELATIONS, default_repositories, params_schema
from github_collector.run_tasks import commit_run, plan_run
from github_collector.sensors import RateLimitSensor

SCHEMA = params_schema()
SLOTS = settings.fetch_slots()


@dag(
    dag_id=settings.DAG_ID,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_tasks=16,
    tags=["github", "quota-aware"],
    doc_md=__doc__,
    default_args={"retries": 3, "retry_delay": dt.timedelta(seconds=30), "retry_exponential_backoff": True},
    params={
        "repositories": Param(
            default_repositories(),
            description="Repositories as owner/name, e.g. apache/airflow.",
            **SCHEMA["repositories"],
        ),
        "relations": Param(
            DEFAULT_RELATIONS,
            description="Which users to collect for each repository.",
            examples=DEFAULT_RELATIONS,
            **SCHEMA["relations"],
        ),
        "batch_size": Param(
            50,
            description="Repositories per batch, the unit a fetch slot takes and checkpoints "
            "(50 share one summary query: cheapest incremental runs).",
            **SCHEMA["batch_size"],
        ),
        "full_refresh": Param(
            False,
            description="Re-list everything and refresh every profile, ignoring stored state.",
            **SCHEMA["full_refresh"],
        ),
    },
)
def github_repo_users():
    @task
    def plan(**context) -> dict:
        return plan_run(context["params"], context["dag"].dag_id, context["run_id"])

    @task_group
    def collect(slot: int):
        gate = RateLimitSensor(task_id="quota_gate", slot=slot, map_index_template="slot {{ task.slot }}")
        fetch = FetchBatchOperator(
            task_id="fetch", slot=slot, map_index_template="{{ slot_label | default('slot ' ~ task.slot) }}"
        )
        gate >> fetch

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[Asset(settings.USERS_ASSET_NAME)])
    def commit(**context) -> dict:
        return commit_run(context["dag"].dag_id, context["run_id"], context.get("logical_date"))

    # Expanding over a list fixed at parse time, not over plan's XCom: Airflow 2.11's
    # `dags backfill` deadlocks on XCom-mapped tasks (apache/airflow#25730, #34012).
    plan() >> collect.expand(slot=list(range(SLOTS))) >> commit()


github_repo_users()
