"""How a task waits for quota (waiting.py): short waits slept, long ones deferred to end
resume_lead seconds before the reset, and never deferred for less than resume_lead."""

from __future__ import annotations

import pytest

from github_collector.waiting import Wait, plan_wait

pytestmark = pytest.mark.unit
NOW = 1_000.0


@pytest.mark.parametrize(
    ("wait", "max_inline", "lead", "expected"),
    [
        (20.0, 30.0, 3.0, Wait(defer=False, seconds=20.0)),  # within max_inline_wait: slept
        (2.5, 0.0, 3.0, Wait(defer=False, seconds=2.5)),  # within the lead: slept even at 0
        (-4.0, 0.0, 3.0, Wait(defer=False, seconds=0.0)),  # a reset already past: no wait
        (100.0, 30.0, 3.0, Wait(defer=True, until=NOW + 97.0)),  # ends 3 s early
        (4.0, 0.0, 3.0, Wait(defer=True, until=NOW + 3.0)),  # deferred for 3 s at least
        (100.0, 0.0, 0.0, Wait(defer=True, until=NOW + 100.0)),  # lead 0: ends at the reset
        (1.0, 0.0, 0.0, Wait(defer=True, until=NOW + 1.0)),
    ],
)
def test_plan_wait(wait, max_inline, lead, expected):
    assert plan_wait(NOW + wait, NOW, max_inline, lead) == expected


def test_a_forced_deferral_still_ends_before_the_reset():
    assert plan_wait(NOW + 2.0, NOW, 30.0, 3.0, force_defer=True) == Wait(defer=True, until=NOW + 3.0)
    assert plan_wait(NOW + 60.0, NOW, 30.0, 3.0, force_defer=True) == Wait(defer=True, until=NOW + 57.0)
