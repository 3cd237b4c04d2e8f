"""The fleet census: every worker's socket count, shared through Redis.

Why: nginx spreads handshakes blindly (round-robin natively, a random DNS
order in compose, kube-proxy in k8s), and a worker added to a busy fleet gets
no existing socket. With each worker's count in one place, a worker can see it
holds more than its share: it then refuses new handshakes (wsworker.admission,
nginx moves on) and, after a scale-out, hands sockets over (wsworker.rebalance).

Each worker, once a second (a task started by the server, like layerwatch):
- writes its count to `<prefix>:wsworker:census:<worker>` with a TTL, and its
  name into the set `<prefix>:wsworker:census`;
- reads every member's count; a member whose key expired (a dead or frozen
  worker) is dropped from the set, so it leaves the mean within TTL_SECONDS.

Decisions use this snapshot only, and never a count of our own fresher than
the others': their entries are up to a second old, so while every worker grows
at once (a reconnect storm, a burst) a fresh own count would put every worker
above the mean together and all would refuse. A worker therefore enters its own
count as the lower of its last two (the older one while counts rise, the newer
while they fall): staleness can only make it look emptier, never fuller, and
only a real imbalance makes it refuse.

A draining worker removes itself (its sockets are leaving). Without a Redis
channel layer, or while Redis does not answer within TIMEOUT (shorter than the
probes'), there is no census: the flags are cleared and the cap alone applies.
"""
import asyncio
import logging
import math
from dataclasses import dataclass

from django.conf import settings

from . import admission, conf, rebalance, redisconf, registry, ticks

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 1.0
TTL_SECONDS = 5  # a worker that stopped writing (killed, frozen) leaves the census after this
TIMEOUT = 0.5  # every Redis call; the probes allow 2 s (health.TIMEOUT), k8s 3 s
MIN_SLACK = 5  # sockets: below this an imbalance is not worth a refusal or a move
# A worker counts as a place to send sockets once it has been in the census this
# many times in a row: by then nginx (NGINX_RESOLVER_VALID, 2 s) and k8s readiness
# know it, so refusing elsewhere does not just bounce clients off the whole fleet.
SETTLED_CENSUSES = 3
_seen: dict[str, int] = {}  # worker -> consecutive censuses it appeared in

_task: asyncio.Task | None = None


@dataclass(frozen=True)
class Fleet:
    """One census snapshot: socket count per worker (this one included)."""

    me: str
    counts: dict

    @property
    def mine(self) -> int:
        return self.counts.get(self.me, 0)

    @property
    def mean(self) -> float:
        return sum(self.counts.values()) / len(self.counts) if self.counts else 0.0

    @property
    def slack(self) -> float:
        return max(self.mean * float(conf.get("WS_BALANCE_TOLERANCE")), MIN_SLACK)

    @property
    def upper(self) -> float:
        """Most sockets a worker may hold before it counts as above the mean."""
        return self.mean + self.slack

    @property
    def lower(self) -> float:
        """Fewer sockets than this: the worker is well below the mean (it should get the new ones)."""
        return self.mean - self.slack

    @property
    def target(self) -> int:
        """What a rebalancing worker closes down to: its fair share."""
        return math.ceil(self.mean)

    def as_dict(self) -> dict:
        return {"workers": len(self.counts), "mean": round(self.mean, 1), "upper": round(self.upper, 1),
                "counts": dict(sorted(self.counts.items()))}


def _key_prefix() -> str:
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {})
    prefix = layer.get("CONFIG", {}).get("prefix") or "asgi"
    return f"{prefix}:wsworker:census"


def _host() -> dict | None:
    """The census lives on the layer's first Redis server (Sentinel: its master; with
    shards, the first shard: while it is down, admission falls back to the cap)."""
    found = redisconf.hosts()
    return found[0] if found else None


def ensure_started() -> None:
    """Start the census on the running loop once per process (the server calls it)."""
    global _task
    if _host() is None:
        return
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_run(), name="wsworker-census")


async def take(client, members_key: str, me: str, count: int | None, judge_as: int | None = None) -> Fleet:
    """Publish our count (None: withdraw) and read everyone's; in the snapshot our
    own entry is `judge_as` when given (see the module docstring)."""
    async with client.pipeline(transaction=False) as pipe:
        if count is None:
            pipe.delete(f"{members_key}:{me}")
            pipe.srem(members_key, me)
        else:
            pipe.set(f"{members_key}:{me}", count, ex=TTL_SECONDS)
            pipe.sadd(members_key, me)
            pipe.expire(members_key, TTL_SECONDS * 12)
        pipe.smembers(members_key)
        *_, members = await pipe.execute()
    names = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
    values = await client.mget([f"{members_key}:{n}" for n in names]) if names else []
    counts, gone = {}, []
    for name, value in zip(names, values):
        if value is None:
            gone.append(name)
        else:
            counts[name] = int(value)
    if gone:
        await client.srem(members_key, *gone)
    if count is not None:
        # Our own entry as written (it can expire before the read when the loop stalls
        # longer than the TTL), or as judged (the module docstring).
        counts[me] = count if judge_as is None else judge_as
    return Fleet(me=me, counts=counts)


def refuses(fleet: Fleet | None) -> bool:
    """The balance rule: should this worker refuse new handshakes (nginx moves on)?

    Only when a settled worker below the mean exists to take them; then when
    this one is above the mean by more than the tolerance, or, while some worker
    is that far below it (just scaled out), when this one is at or above it: new
    sockets go to the emptiest workers first and fewer have to be moved later.
    """
    receivers = receivers_of(fleet)
    if not receivers:
        return False
    return fleet.mine > fleet.upper or (fleet.mine >= fleet.mean and min(receivers) < fleet.lower)


def receivers_of(fleet: Fleet | None) -> list[int]:
    """Counts of the settled workers below the mean: where moved or refused sockets can go."""
    if fleet is None or fleet.me not in fleet.counts:
        return []
    return [c for name, c in fleet.counts.items()
            if name != fleet.me and c < fleet.mean and _seen.get(name, 0) >= SETTLED_CENSUSES]


async def withdraw() -> None:
    """Leave the census now (the drain calls it): a draining worker is no place to send sockets."""
    host = _host()
    if host is None:
        return
    try:
        async with redisconf.connect(host, TIMEOUT) as client:
            await take(client, _key_prefix(), registry.worker_id(), None)
    except Exception as exc:
        logger.warning("census: could not withdraw (%s); the entry expires within %ds", exc, TTL_SECONDS)
    _apply(None)


def _apply(fleet: Fleet | None) -> None:
    global _seen
    if fleet is not None:  # a census that failed (a Redis blip) forgets nobody
        _seen = {name: _seen.get(name, 0) + 1 for name in fleet.counts}
    admission.fleet = fleet.as_dict() if fleet is not None else None
    admission.above_mean = refuses(fleet)
    rebalance.on_census(fleet if receivers_of(fleet) else None)


async def _run() -> None:
    async with redisconf.connect(_host(), TIMEOUT) as client:
        await _census_loop(client)


async def _census_loop(client) -> None:
    members_key, me = _key_prefix(), registry.worker_id()
    failing, previous = False, None
    while True:
        draining = registry.state.draining
        count = admission.open_sockets
        judge_as = count if previous is None else min(count, previous)
        previous = count
        try:
            fleet = await take(client, members_key, me, None if draining else count, judge_as)
        except Exception as exc:
            if asyncio.current_task().cancelling():
                raise asyncio.CancelledError from exc
            if not failing:
                logger.warning("census: Redis does not answer (%s); admission falls back to WS_MAX_SOCKETS", exc)
            failing = True
            _apply(None)
        else:
            if failing:
                logger.info("census: Redis answers again; balancing across %d worker(s)", len(fleet.counts))
            failing = False
            try:
                _apply(None if draining else fleet)
            except Exception:  # never let one bad snapshot end the census
                logger.exception("census: applying a snapshot failed; cap only until the next")
                _apply(None)
            if draining:
                return  # withdrawn: the drain closes everything anyway
        await ticks.sleep(INTERVAL_SECONDS)  # with the worker's other chores (wsworker.ticks)
