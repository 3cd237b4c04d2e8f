"""WebSocket fan-out benchmark behind `make bench` (see docs/benchmarks.md).

Load generation runs in its own processes on loopback so the figures describe
the servers, and the client's own CPU is reported next to them to prove it is
not the bottleneck.
"""
