"""How a task waits for quota: it sleeps through a short wait and defers a long one, ending the
deferral a little before the reset so the first request still goes out right at it.

A deferral's way back costs time: the trigger fires, the scheduler queues the task again and a
worker starts it, 1-2 s with Celery on a small machine, more on a busy one. A deferral that
ended at the reset would leave the fresh window idle for that long. Ending it ``resume_lead``
seconds early, the resumed task finds a wait no longer than that and sleeps it through.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wait:
    """What to do about a wait: sleep ``seconds`` in the task, or defer until ``until``."""

    defer: bool
    seconds: float = 0.0
    until: float = 0.0


def plan_wait(
    ready_at: float, now: float, max_inline_wait: float, resume_lead: float, force_defer: bool = False
) -> Wait:
    """Sleep when the wait is at most ``max_inline_wait`` or ``resume_lead`` (a deferral cannot
    win back less than its own round trip) unless ``force_defer``; else defer until
    ``resume_lead`` s before ``ready_at``, but for ``resume_lead`` s at least: Airflow 3.3 may
    fail a task whose trigger fires within moments of its deferral (apache/airflow#71580)."""
    wait = max(ready_at - now, 0.0)
    if not force_defer and wait <= max(max_inline_wait, resume_lead):
        return Wait(defer=False, seconds=wait)
    return Wait(defer=True, until=max(ready_at - resume_lead, now + resume_lead))
