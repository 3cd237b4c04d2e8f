"""Real TLS for the tests: a test CA from `make certs`, clients that trust it.

    ca = make_certs(tmp_dir)            # scripts/certs: ca/ca.crt + localhost.crt/.key
    ctx = client_context(ca.ca_cert)    # ssl.SSLContext trusting only that CA
    status, headers, body = https_get(url, ctx)
    nss_home(tmp_dir, ca.ca_cert)       # a HOME whose NSS db trusts the CA, for Chromium
    peer_serial(host, port, ctx)        # serial number of the certificate nginx serves

Chromium on Linux trusts the CAs in the NSS database under $HOME/.pki/nssdb;
the browser tests start it with HOME pointing at a directory made by
nss_home(), so it validates nginx's certificate the way a user's browser does
after importing the CA (no --ignore-certificate-errors of any kind).
"""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.stack import ROOT


@dataclass
class Certs:
    dir: Path
    ca_cert: Path
    cert: Path
    key: Path


def make_certs(directory: Path, *names: str, force: bool = False) -> Certs:
    """Run scripts/certs (what `make certs` runs); force=True re-issues the server certificate."""
    env = {k: v for k, v in os.environ.items() if k not in ("TLS_CERT_DIR", "TLS_CERT_FILE", "TLS_KEY_FILE")}
    env["TLS_CERT_FILE"], env["TLS_KEY_FILE"] = "localhost.crt", "localhost.key"
    if force:
        env["CERTS_FORCE"] = "1"
    subprocess.run([str(ROOT / "scripts" / "certs"), str(directory), *names], check=True,
                   capture_output=True, text=True, env=env, timeout=60)
    return Certs(directory, directory / "ca" / "ca.crt", directory / "localhost.crt", directory / "localhost.key")


def client_context(cafile: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https_get(url: str, ctx: ssl.SSLContext, headers: dict | None = None, method: str = "GET",
              body: bytes | None = None, timeout: float = 10):
    """One request, no redirect following: (status, {lowercased header: value}, body)."""
    from urllib.parse import urlsplit
    u = urlsplit(url)
    conn = (http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=timeout)
            if u.scheme == "https" else http.client.HTTPConnection(u.hostname, u.port, timeout=timeout))
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers or {})
        resp = conn.getresponse()
        hdrs: dict[str, str] = {}
        for k, v in resp.getheaders():
            hdrs[k.lower()] = f"{hdrs[k.lower()]}, {v}" if k.lower() in hdrs else v
        hdrs["_set_cookie_list"] = resp.msg.get_all("Set-Cookie") or []
        return resp.status, hdrs, resp.read()
    finally:
        conn.close()


def handshake(host: str, port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> ssl.SSLSocket:
    raw = socket.create_connection((host, port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


def peer_serial(host: str, port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> int:
    """Serial number of the certificate the server presents right now (a new handshake)."""
    with handshake(host, port, ctx, server_hostname) as s:
        return int(s.getpeercert()["serialNumber"], 16)


def nss_home(directory: Path, ca_cert: Path) -> Path:
    """A HOME whose ~/.pki/nssdb trusts ca_cert for TLS servers (certutil, libnss3-tools)."""
    db = directory / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True,
                   capture_output=True, timeout=60)
    subprocess.run(["certutil", "-A", "-d", f"sql:{db}", "-n", "chat-test-ca", "-t", "C,,", "-i", str(ca_cert)],
                   check=True, capture_output=True, timeout=60)
    return directory
