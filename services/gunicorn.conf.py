"""gunicorn settings for the web tier (pages, admin, token API, static files).

Loaded with ``gunicorn -c services/gunicorn.conf.py``. Every knob is an
environment variable from .env.example so compose, k8s and the native runner
tune the same file instead of forking command lines.
"""
import os

from gunicorn import glogging


def _int(name: str, default: int) -> int:
    """Read an integer setting; a typo fails at boot with the variable's name."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"gunicorn.conf.py: {name}={raw!r} is not an integer") from exc


bind = f"{os.environ.get('BIND_HOST', '0.0.0.0')}:{_int('PORT', 8000)}"

# gthread: a few processes with threads each keeps the DB pool small while a
# slow request does not block the whole worker.
worker_class = "gthread"
workers = _int("WEB_CONCURRENCY", 2)
threads = _int("WEB_THREADS", 4)
timeout = _int("WEB_TIMEOUT", 30)
graceful_timeout = _int("WEB_GRACEFUL_TIMEOUT", 20)
keepalive = 5

# Recycle workers now and then so a slow leak cannot grow forever; the jitter
# keeps all workers from restarting at the same moment.
max_requests = 2000
max_requests_jitter = 200

# Logs go to stdout/stderr: the container runtime (or the native runner's log
# file) collects them. The access log is the proof a request reached gunicorn.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
# Path without the query string: a ?token=... must never reach a log line.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s"'

# Passing health probes stay out of the access log, as on the ws tier
# (wsworker.access): compose's healthcheck and k8s's probes hit /healthz and
# /readyz every few seconds on every pod, thousands of identical lines a day
# drowning the ones that matter. A probe answered anything but 200 is logged;
# LOG_LEVEL=debug logs them all.
PROBE_PATHS = ("/healthz", "/readyz")


class ProbeQuietLogger(glogging.Logger):
    def access(self, resp, req, environ, request_time):
        if req.path in PROBE_PATHS and getattr(resp, "status_code", None) == 200 and loglevel != "debug":
            return
        super().access(resp, req, environ, request_time)


logger_class = ProbeQuietLogger

# Which peers may set X-Forwarded-Proto/-For. Only nginx talks to gunicorn
# (loopback natively, the pod/compose network otherwise), and nginx overwrites
# X-Forwarded-For with the real client address, so trusting every peer here
# is safe only because web is never published directly. Narrow it with
# FORWARDED_ALLOW_IPS (gunicorn's own variable, not a project setting) when
# the network is shared with untrusted clients.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")

# The heartbeat file lives in RAM: a slow or read-only disk must not make the
# arbiter think workers hung.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# --- metrics: prometheus_client's documented multiprocess mode -----------------
# Each worker process counts its requests (django-prometheus middleware, switched
# on by PROMETHEUS_MULTIPROC_DIR in config/settings.py) into files in that dir; the
# arbiter serves their sum on WEB_METRICS_PORT (0: off), a port nginx never proxies.
# The dir must be set before any process imports prometheus_client, and emptied
# at start: stale files of a previous run would be summed in.
metrics_port = _int("WEB_METRICS_PORT", 9101)
if metrics_port:
    import shutil
    import tempfile

    _dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="gunicorn-metrics-")
    shutil.rmtree(_dir, ignore_errors=True)
    os.makedirs(_dir, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir
else:
    # Off: the workers must not count into files nobody collects (nor into a dir not made).
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def when_ready(server):
    if not metrics_port:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(metrics_port, addr=os.environ.get("BIND_HOST", "0.0.0.0"), registry=registry)
    server.log.info("metrics: http://%s:%d/metrics", os.environ.get("BIND_HOST", "0.0.0.0"), metrics_port)


def child_exit(server, worker):
    # A dead worker's live gauges are dropped; its counters stay in the sum.
    if metrics_port:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# --- logs: LOG_FORMAT=json writes gunicorn's own lines as JSON too ---------------
if os.environ.get("LOG_FORMAT", "plain") == "json":
    _json = {"()": "pythonjsonlogger.json.JsonFormatter",
             "format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
             "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": _json},
        "filters": {"redact_tokens": {"()": "chat.logfilters.RedactTokens"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                "formatter": "json", "filters": ["redact_tokens"]}},
        "root": {"handlers": ["stdout"], "level": "INFO"},
        "loggers": {"gunicorn.error": {"handlers": ["stdout"], "level": loglevel.upper(), "propagate": False},
                    "gunicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False}},
    }
