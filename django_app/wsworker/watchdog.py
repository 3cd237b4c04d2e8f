"""Event-loop stall watchdog: a worker whose loop is blocked exits, so it is restarted.

Why: every socket of a worker shares one event loop. A loop blocked by a bug (a
synchronous call, a runaway computation) answers nothing, yet its process lives
and the kernel still accepts connections for it; /healthz, served from that loop,
simply times out. k8s's liveness probe catches that after its failures, but
Docker never restarts an *unhealthy* container. So a thread outside the loop
watches a heartbeat the loop writes every CHECK_SECONDS; when the loop missed it
for WS_LOOP_STALL_SECONDS, the thread writes the loop's current stack to stderr
(the bug's location) and ends the process with EXIT_CODE. The supervisor then
restarts it: compose's `restart: unless-stopped`, k8s's container restart; the
native runner does not restart workers. Clients reconnect and resume; nothing
stored is lost. WS_LOOP_STALL_SECONDS=0 turns the watchdog off.

A paused process (SIGSTOP, a frozen VM) is not a blocked loop: the watchdog
thread was paused too, sees its own sleep overshoot, and starts counting afresh.
"""
import logging
import os
import sys
import threading
import time
import traceback

from . import ticks

logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # the heartbeat beats with the worker's other chores (wsworker.ticks)
# The watchdog's own sleep overshooting by this much means the whole process was paused.
PAUSED_SLACK = 2.0
EXIT_CODE = 70  # EX_SOFTWARE

_last_beat = 0.0
_thread: threading.Thread | None = None


def start(loop, stall_seconds: float) -> None:
    """Start beating on `loop` (called on the loop's thread) and the watching thread."""
    global _thread, _last_beat
    if stall_seconds <= 0 or _thread is not None:
        return
    _last_beat = time.monotonic()

    def beat():
        global _last_beat
        _last_beat = time.monotonic()
        loop.call_at(ticks.at(CHECK_SECONDS, loop.time()), beat)

    loop.call_soon(beat)
    _thread = threading.Thread(target=_watch, args=(float(stall_seconds), threading.get_ident()),
                               name="wsworker-watchdog", daemon=True)
    _thread.start()
    logger.info("watchdog: the worker exits if its event loop stalls for %gs (WS_LOOP_STALL_SECONDS)", stall_seconds)


def _watch(stall: float, loop_thread: int) -> None:
    global _last_beat
    previous = time.monotonic()
    while True:
        time.sleep(CHECK_SECONDS)
        now = time.monotonic()
        if now - previous > CHECK_SECONDS + PAUSED_SLACK:
            logger.warning("watchdog: the process was paused for %.1fs (not a blocked loop)", now - previous)
            _last_beat = now
        previous = now
        lag = now - _last_beat
        if lag > stall:
            _exit(lag, stall, loop_thread)


def _exit(lag: float, stall: float, loop_thread: int) -> None:
    frame = sys._current_frames().get(loop_thread)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
    # os.write, not logging: the blocked loop may hold a logging lock.
    message = (f"wsworker watchdog: event loop blocked for {lag:.1f}s > WS_LOOP_STALL_SECONDS={stall:g}; "
               f"exiting with {EXIT_CODE} so the supervisor restarts this worker. Loop thread at:\n{stack}")
    try:
        os.write(2, message.encode("utf-8", "replace"))
    finally:
        os._exit(EXIT_CODE)
