"""A knee at the last scheduled step is a lower bound, and the report says so.

On a fast day both stacks passed N100's last step (120,000/s); the report then
ranked them by the rate each delivered at that same step (120,000 vs 119,910)
and called ours ahead. An operator must read "≥", and no verdict from it.
"""
from bench.report import summary
from bench.report_rooms import at_ceiling, markdown, targets

STEPS = [1000, 2000, 4000]


def _res(steps, *rows, rooms=1):
    rows = [{"target_per_s": rate, "delivered_per_s": rate, "ok": ok, "deliveries_per_ws_cpu_s": rate * 2,
             "p99_ms": 9.0} for rate, ok in rows]
    passing = [r for r in rows if r["ok"]]
    return {"scenario": {"steps": steps, "rooms": rooms}, "workers": 2, "steps": rows,
            "knee": max(passing, key=lambda r: r["delivered_per_s"]) if passing else None}


def _results(ours, peer):
    return {"scenarios": list(ours),
            "stacks": {"ours": {"label": "ours", "stores": True, "fanout": ours},
                       "socketio": {"label": "peer", "stores": False, "fanout": peer}}}


def _verdict(found, start):
    (row,) = [(m, ok) for t, m, ok in found if t.startswith(start)]
    return row


def test_a_stack_that_passed_the_last_step_has_a_lower_bound_for_a_knee():
    assert at_ceiling(_res(STEPS, (1000, True), (2000, True), (4000, True)))
    assert not at_ceiling(_res(STEPS, (1000, True), (2000, True), (4000, False), (3000, True)))
    assert not at_ceiling(_res([100], (100, True)))  # a fixed-rate scenario has no knee search


def test_both_at_the_last_step_are_not_ranked_one_at_it_is_ahead():
    both = _res(STEPS, (1000, True), (2000, True), (4000, True))
    below = _res(STEPS, (1000, True), (2000, True), (4000, False))
    results = _results({"N10": both, "N100": both}, {"N10": below, "N100": both})
    found = targets(results)
    assert _verdict(found, "N10: ahead of Socket.IO in loss-free knee") == ("≥ 4,000 vs 2,000", True)
    assert _verdict(found, "N100: ahead of Socket.IO in loss-free knee") == (
        "≥ 4,000 vs ≥ 4,000, both passed the last step", False)
    assert "| N10 | ours | 2 | ≥ 4,000 |" in markdown(results)


def test_a_share_of_an_n10_knee_at_the_last_step_is_an_upper_bound_and_proves_nothing():
    n10 = _res(STEPS, (1000, True), (2000, True), (4000, True))
    many = _res(STEPS, (1000, True), (2000, True), (4000, False), rooms=200)
    results = _results({"N10": n10, "G200x15": many}, {"N10": n10, "G200x15": many})
    assert _verdict(targets(results), "G200x15: knee ≥ 50 % of ours' N10 knee") == ("≤ 0.50×", False)


def test_the_headline_table_says_when_ours_passed_the_last_step():
    top = _res(STEPS, (1000, True), (2000, True), (4000, True))
    below = _res(STEPS, (1000, True), (2000, True), (4000, False))
    labels = [row[0] for row in summary(_results({"N10": top, "DM2000": below}, {}))]
    assert "N10: loss-free delivered/s (knee; ours passed the last step: ≥)" in labels
    assert "DM2000: loss-free delivered/s (knee)" in labels
