"""wsworker: the process that runs WebSockets for a Channels project.

daphne, plus what a production WebSocket tier needs and daphne lacks: a drain
on SIGTERM (close 1012, wait, stop), slow-client shedding, GC tuning for
thousands of long-lived sockets, pre-built frames for fan-out, its own
/healthz and /readyz, and recovery of the Redis channel layer after a restart.

It knows nothing of any app (a test fails if it imports `chat`). An app plugs
in through three documented points only:

- `wsworker.registry`: add each accepted consumer to `registry.live` (the drain
  closes them with 1012 first, /healthz counts them) and count refusals and
  deliveries there;
- `wsworker.hooks`: `on_resync(fn)` (the channel layer was flushed after Redis
  restarted: resubscribe and catch up) and `on_drain(fn)` (finish work accepted
  before the drain, e.g. messages still being stored);
- the scope key `wsworker.frames.SCOPE_FRAMES`: a (frame, send) pair for
  writing pre-built WebSocket frames to one socket.

Run it with `python -m wsworker [daphne args] yourproject.asgi:application`.
Map of the package: server (startup → main loop → shutdown), protocol (the
WebSocket connection), frames, reading and inbox (per-socket costs), drain, shedding,
gctune, eventloop, watchdog (a blocked loop exits), health, access (its log
lines), metrics, registry, admission, census and rebalance (scaling), layerwatch
and redisconf (the Redis channel layer, Sentinel and shards included), hooks, conf.
"""
