#!/bin/sh
# nginx container (compose): an entrypoint hook of the official image, run after
# 20-envsubst-on-templates.sh rendered the template. It writes the TLS parts the
# template includes (nginx/tls/render -> /etc/nginx/tls/) and, with TLS on,
# starts the certificate watcher (nginx/tls/watch) in the background.
# A missing or unreadable certificate is not fatal here (no restart loop): nginx
# starts answering 503 "tls: ... <path> is missing or unreadable" (so its health
# check fails and `make up` stops with that reason in `make logs`), serves ACME
# challenges, and the watcher switches to HTTPS as soon as the files appear.
set -eu
[ "${TLS_MODE:-off}" = off ] && { /opt/chat-tls/render /etc/nginx/tls; exit 0; }
export TLS_CERT_PATH="/etc/nginx/certs/${TLS_CERT_FILE:?TLS_CERT_FILE is not set}"
export TLS_KEY_PATH="/etc/nginx/certs/${TLS_KEY_FILE:?TLS_KEY_FILE is not set}"
export TLS_LISTEN=8443 ACME_WEBROOT=/var/www/acme
rc=0
/opt/chat-tls/render /etc/nginx/tls || rc=$?
case $rc in
  0) ;;
  3) echo "$0: ERROR: TLS_MODE=$TLS_MODE and $TLS_CERT_PATH or $TLS_KEY_PATH is missing or unreadable" \
          "(host: TLS_CERT_DIR/TLS_CERT_FILE/TLS_KEY_FILE; the key must be readable by uid 101)." \
          "Serving 503 until it appears." >&2 ;;
  *) exit "$rc" ;;
esac
# Detached: it outlives this hook, becomes a child of the nginx master (pid 1)
# and ends with the container.
/opt/chat-tls/watch </dev/null &
