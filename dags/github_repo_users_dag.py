"""
### GitHub repository users

Collects the users tied to each chosen GitHub repository — contributors, fork owners,
stargazers and watchers where GitHub allows it — with their full profiles, inside GitHub's
API quota, into Postgres.

1. **plan** checks the Params, deduplicates the repositories and splits them into batches.
2. per batch, **quota_gate** (RateLimitSensor) waits, deferred, until the token pool covers
   the batch, then reserves that budget; **fetch** collects the batch into Redis with a
   checkpoint after every page, and defers itself until the reset if quota runs out.
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
            description="Repositories per mapped fetch task (50 share one summary query: cheapest incremental runs).",
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
    def plan(**context) -> list[list[str]]:
        return plan_run(context["params"], context["dag"].dag_id, context["run_id"])

    @task_group
    def collect(batch: list[str]):
        gate = RateLimitSensor(task_id="quota_gate", batch=batch)
        fetch = FetchBatchOperator(
            task_id="fetch",
            batch=batch,
            map_index_template="{{ task.batch[0] }}{% if task.batch | length > 1 %} +{{ task.batch | length - 1 }}{% endif %}",
        )
        gate >> fetch

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[Asset(settings.USERS_ASSET_NAME)])
    def commit(**context) -> dict:
        return commit_run(context["dag"].dag_id, context["run_id"], context.get("logical_date"))

    collect.expand(batch=plan()) >> commit()


github_repo_users()
