"""
### GitHub repository users

Collects the users tied to each chosen GitHub repository — contributors, fork owners, the
authors of issues, pull requests and discussions, and stargazers and watchers where GitHub
allows it — with their full profiles, inside GitHub's API quota, into Postgres.

1. **plan** checks the Params, deduplicates the repositories and splits them into batches.
2. a fixed number of mapped **fetch slots** (`GITHUB_REPO_USERS_FETCH_SLOTS`, default 8) take
   the batches one at a time. Per slot, **quota_gate** (RateLimitSensor) waits, deferred,
   until some token can pay the slot's next request above its reserve (it holds nothing:
   every request leases its token, one at a time per account); **fetch**
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
from github_collector.queries import DEFAULT_MAX_AUTHOR_PAGES
from github_collector.run_tasks import asset_extra, commit_run, plan_run
from github_collector.sensors import RateLimitSensor

SCHEMA = params_schema()
SLOTS = settings.fetch_slots()


@dag(
    dag_id=settings.DAG_ID,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    # One run at a time: a run lasting more than a day must not overlap the next, which would
    # find nothing stored yet and list everything again (and share the quota with it).
    max_active_runs=1,
    max_active_tasks=16,
    tags=["github", "quota-aware"],
    doc_md=__doc__,
    default_args={"retries": 3, "retry_delay": dt.timedelta(seconds=30), "retry_exponential_backoff": True},
    # Titles, descriptions and rules of the trigger form: plan.params_schema().
    params={
        "repositories": Param(default_repositories(), **SCHEMA["repositories"]),
        "relations": Param(DEFAULT_RELATIONS, **SCHEMA["relations"]),
        "batch_size": Param(50, **SCHEMA["batch_size"]),
        "full_refresh": Param(False, **SCHEMA["full_refresh"]),
        "max_author_pages": Param(DEFAULT_MAX_AUTHOR_PAGES, **SCHEMA["max_author_pages"]),
    },
)
def github_repo_users():
    @task
    def plan(**context) -> dict:
        # The logical date picks the day's share of scheduled re-listings (None: today).
        return plan_run(
            context["params"],
            context["dag"].dag_id,
            context["run_id"],
            logical_date=context.get("logical_date"),
        )

    @task_group
    def collect(slot: int):
        gate = RateLimitSensor(task_id="quota_gate", slot=slot, map_index_template="slot {{ task.slot }}")
        fetch = FetchBatchOperator(
            task_id="fetch", slot=slot, map_index_template="{{ slot_label | default('slot ' ~ task.slot) }}"
        )
        gate >> fetch

    users_asset = Asset(settings.USERS_ASSET_NAME)

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[users_asset])
    def commit(**context) -> dict:
        counts = commit_run(context["dag"].dag_id, context["run_id"], context.get("logical_date"))
        # The run's counts ride on the Asset event (a Dataset event's extra on Airflow 2.11).
        context["outlet_events"][users_asset].extra = asset_extra(counts)
        return counts

    # Expanding over a list fixed at parse time, not over plan's XCom: Airflow 2.11's
    # `dags backfill` deadlocks on XCom-mapped tasks (apache/airflow#25730, #34012).
    plan() >> collect.expand(slot=list(range(SLOTS))) >> commit()


github_repo_users()
