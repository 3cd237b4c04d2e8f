"""Counters the bad-input suites print at the end: inputs tried, refusals by kind, crashes.

Why: the issue asks for figures an operator can read in the CI log, and a run
that tried nothing must be visible as such rather than passing silently.
"""
from collections import Counter


# Every Figures made in this session, for the terminal summary (tests/security/conftest.py).
ALL = []


class Figures:
    def __init__(self, title):
        ALL.append(self)
        self.title = title
        self.inputs = Counter()
        self.refusals = Counter()
        self.accepted_count = 0
        self.crashes = 0

    def tried(self, kind):
        self.inputs[kind] += 1

    def refused(self, kind):
        self.refusals[kind] += 1

    def accepted(self):
        self.accepted_count += 1

    def crashed(self):
        self.crashes += 1

    def lines(self):
        lines = [f"== {self.title}: {sum(self.inputs.values())} inputs tried, "
                 f"{self.accepted_count} accepted, {sum(self.refusals.values())} refused, "
                 f"{self.crashes} crashes"]
        lines += [f"   tried    {k:<32} {v}" for k, v in sorted(self.inputs.items())]
        lines += [f"   refused  {k:<32} {v}" for k, v in sorted(self.refusals.items())]
        return lines

    def report(self):
        print("\n" + "\n".join(self.lines()))
