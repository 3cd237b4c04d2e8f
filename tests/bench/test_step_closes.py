"""A socket lost in one step of a scenario fails that step only.

The client processes count closes over the whole scenario; the step's verdict
(and the report's `shed` column) must see only the closes of that step: the
lost socket is topped up before the next step, which then stands on its own.
"""
from bench.fanout import since


def test_a_step_sees_only_its_own_closes():
    after_step_1 = {"1006": 1}  # one socket lost, not resumed
    after_step_2 = {"1006": 1}  # topped up before step 2, nothing lost in it
    after_step_3 = {"1006": 3, "1011": 1}
    assert since(after_step_1, {}) == {"1006": 1}
    assert since(after_step_2, after_step_1) == {}
    assert since(after_step_3, after_step_2) == {"1006": 2, "1011": 1}
