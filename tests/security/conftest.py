"""Print the bad-input figures in pytest's summary, so CI logs show them uncaptured."""
from tests.security.figures import ALL


def pytest_terminal_summary(terminalreporter):
    tried = [fig for fig in ALL if sum(fig.inputs.values())]
    if not tried:
        return
    terminalreporter.section("bad-input figures")
    for fig in tried:
        for line in fig.lines():
            terminalreporter.write_line(line)
