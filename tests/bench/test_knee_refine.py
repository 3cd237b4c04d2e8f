"""The knee search refines between the scheduled steps.

Two stacks that pass 12,000/s and fail 15,000/s would otherwise report the same
knee; what an operator reads is the rate halfway, then halfway again.
"""
from bench.fanout import Scenario, between


def _rows(*steps):
    return [{"target_per_s": rate, "ok": ok} for rate, ok in steps]


def test_the_next_step_is_halfway_between_the_knee_and_the_failure_above_it():
    assert between(_rows((10000, True), (12000, True), (15000, False), (20000, False))) == 13500
    assert between(_rows((12000, True), (15000, False), (20000, False), (13500, True))) == 14200
    assert between(_rows((12000, True), (15000, False), (20000, False), (13500, False))) == 12800


def test_a_failure_below_the_knee_is_not_the_upper_bound():
    # a noisy failing step below a passing one: the gap is above the highest pass
    assert between(_rows((2000, False), (3000, True), (4000, False))) == 3500


def test_nothing_to_refine():
    assert between(_rows((100, True))) is None  # never failed: the knee is the top step
    assert between(_rows((25, False), (50, False))) is None  # never passed
    assert between(_rows((12000, True), (12500, False))) is None  # within 5 %: below the noise


def test_a_full_run_refines_and_a_smoke_does_not():
    from bench.__main__ import FULL, SMOKE

    assert Scenario(**FULL["DM2000"]).refine == 2
    # a smoke stays short: no refined steps (a one-step scenario has nothing to refine)
    assert all(Scenario(**v).refine == 0 or len(v["steps"]) == 1 for v in SMOKE.values())
