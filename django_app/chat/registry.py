"""Process-local state shared by the consumers, the ws health app and the drain.

One daphne process = one registry: /healthz counts these sockets, and the
SIGTERM drain closes them. Nothing here crosses processes (that is Redis's job).
"""
import collections
import weakref

# WeakSet: a consumer that dies without disconnect() can never pin memory or be
# counted forever.
live = weakref.WeakSet()


class _State:
    draining = False


state = _State()


def count() -> int:
    return len(live)


# Every refusal this worker made, by kind (error-frame code, close reason, shed):
# exposed on the worker's /healthz so operators can see what is being refused.
refusals = collections.Counter()
