"""Process plumbing shared by the bench's own stacks: free ports, bounded waits.

Every wait has a deadline so a server that never comes up fails the run with
its log tail instead of hanging it.
"""
import os
import random
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()  # never the same port twice in one run


def free_run(n: int, tries: int = 200) -> int:
    """A base port B with B+1..B+n free now, all below the kernel's ephemeral range.

    A server started a moment later (or stopped and started again) must find its
    port free: under load any ephemeral port may be the local end of an outgoing
    connection (nginx to the workers, the clients), and one taken between picking
    and binding failed a whole run (`ws-2: 127.0.0.1:35873 is already in use`).
    """
    top = min(32000, _ephemeral_low()) - n - 1
    for _ in range(tries):
        base = random.randint(20000, top)
        ports = range(base + 1, base + n + 1)
        if _handed_out.intersection(ports):
            continue
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _handed_out.update(ports)
        return base
    raise RuntimeError(f"no {n} consecutive free loopback ports below {top + n + 1}")


def free_port() -> int:
    """A loopback port free now, below the ephemeral range (free_run)."""
    return free_run(1) + 1


def raise_nofile():
    """Lift the soft fd limit to the hard one: idle-capacity runs hold 10k+ sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def wait_port(port, proc=None, timeout=20.0, log=None):
    """Wait until something accepts on 127.0.0.1:port, or fail with the log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    tail = ""
    if log and Path(log).exists():
        tail = Path(log).read_text(errors="replace")[-2000:]
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s\n{tail}")


def spawn(argv, log_path, env=None, cwd=REPO):
    """Start a server with stdout+stderr in its own log, in its own process group."""
    log = open(log_path, "ab")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)


def stop(proc, timeout=10.0):
    """SIGTERM then SIGKILL after `timeout`: exactly the process we started."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def clean_env(**extra):
    """Our environment plus PYTHONPATH=repo, so `bench.*` modules import in servers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


class LoopbackURLs:
    """URLs of a bench stack whose nginx listens on 127.0.0.1:`http_port`."""

    http_port: int

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_base(self):
        return f"ws://127.0.0.1:{self.http_port}"
