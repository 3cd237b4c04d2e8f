"""BENCH-ONLY experiment switches, loaded by Python at start-up via PYTHONPATH.

`scripts/bench --stacks ours,ours+reorder` puts this directory on the product
servers' PYTHONPATH and sets BENCH_VARIANTS; nothing here is on the product
path. It lets the bench measure an option before anyone changes the product;
docs/benchmarks.md gives the numbers and the exact change each one stands for.

  uvloop   asyncio's default loop is uvloop before daphne creates the loop it
           hands to Twisted's asyncio reactor.
  reorder  a socket that receives id N+2 before N+1 (two publishers on two
           workers race to PUBLISH) waits up to BENCH_REORDER_WAIT_S for N+1 to
           arrive from Redis before falling back to the per-socket DB gap fill.
"""
import importlib.abc
import importlib.util
import os
import sys

_VARIANTS = set(filter(None, os.environ.get("BENCH_VARIANTS", "").split(",")))

if "uvloop" in _VARIANTS:
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _patch_reorder(module):
    import asyncio

    wait_s = float(os.environ.get("BENCH_REORDER_WAIT_S", "0.25"))
    consumer = module.ChatConsumer
    deliver = consumer._deliver

    def _state(self):
        if "_bench_lock" not in self.__dict__:
            self._bench_lock = asyncio.Lock()
            self._bench_pending = {}
            self._bench_timer = None
        return self._bench_lock, self._bench_pending

    async def _flush(self, force):
        """Deliver what is now contiguous; on timeout (force) let the DB fill the gap."""
        lock, pending = _state(self)
        async with lock:
            while pending and not self.closed:
                nxt = min(pending)
                if nxt <= self.last_id:
                    pending.pop(nxt)
                    continue
                if nxt != self.last_id + 1 and not force:
                    break
                await deliver(self, nxt, pending.pop(nxt))
            if not pending and self._bench_timer is not None:
                self._bench_timer.cancel()
                self._bench_timer = None

    def _on_timeout(self):
        self._bench_timer = None
        task = asyncio.ensure_future(_flush(self, True))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def chat_message(self, event):
        if self.closed:
            return
        _lock, pending = _state(self)
        pending[event["id"]] = event["text"]
        try:
            await _flush(self, False)
        except Exception:
            self.closed = True
            await self.close(code=1013)
            return
        if pending and self._bench_timer is None:
            self._bench_timer = asyncio.get_running_loop().call_later(wait_s, _on_timeout, self)

    consumer.chat_message = chat_message


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs a patch right after `chat.consumers` executes, before anyone uses it."""

    def find_spec(self, name, path, target=None):
        if name != "chat.consumers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch_reorder(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if "reorder" in _VARIANTS:
    sys.meta_path.insert(0, _PatchAfterImport())
