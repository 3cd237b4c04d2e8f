# Sourced by scripts/local: TLS in the native nginx (TLS_MODE=off|files|acme,
# see .env.example). Kept apart so the runner stays readable; it uses the
# runner's $root, $state, $log_dir, $nginx_host, die and log_tail.
#
#   files: the certificate is TLS_CERT_DIR/TLS_CERT_FILE (+ TLS_KEY_FILE). Missing
#          or unreadable at `up`: stop with an error naming the file. After
#          replacing the files, `scripts/local reload-nginx` (open sockets stay).
#   acme:  certbot (Debian's package) with its state in $state/letsencrypt; the
#          first `up` starts nginx answering only ACME challenges, runs
#          `certbot certonly --webroot`, whose deploy hook reloads nginx into
#          HTTPS. `scripts/local renew-certs [--force]` renews (cron it natively;
#          compose runs certbot's loop for you).

tls_mode=${TLS_MODE:-off}
case $tls_mode in
  off|files|acme) ;;
  *) die "TLS_MODE=$tls_mode is not one of off, files, acme (.env.example)" ;;
esac
if [ "$tls_mode" != off ]; then
  # nginx terminates TLS and sends X-Forwarded-Proto https: the app must trust it.
  export DJANGO_TLS=true
fi
acme_live=$state/letsencrypt/live/chat
case $tls_mode in
  files)
    tls_dir=${TLS_CERT_DIR:-./certs}; [[ $tls_dir = /* ]] || tls_dir="$root/$tls_dir"
    export TLS_CERT_PATH=$tls_dir/${TLS_CERT_FILE:-localhost.crt} TLS_KEY_PATH=$tls_dir/${TLS_KEY_FILE:-localhost.key} ;;
  acme)
    export TLS_CERT_PATH=$acme_live/fullchain.pem TLS_KEY_PATH=$acme_live/privkey.pem ;;
esac
export TLS_LISTEN=${HTTP_BIND:-127.0.0.1}:${HTTPS_PORT:-8443} ACME_WEBROOT=$state/acme

# render_tls DIR: write DIR/tls/*.conf for the template's include globs.
# Sets tls_pending=1 when TLS is asked for but the certificate is not there yet.
render_tls() {
  tls_pending=0
  mkdir -p "$ACME_WEBROOT"
  local rc=0 out
  out=$("$root/nginx/tls/render" "$1/tls" 2>&1) || rc=$?
  echo "$out" >> "$(log_file nginx)"
  case $rc in
    0) ;;
    3) [ "$tls_mode" = acme ] && { tls_pending=1; return 0; }
       local f missing=""
       for f in "$TLS_CERT_PATH" "$TLS_KEY_PATH"; do [ -r "$f" ] && [ -s "$f" ] || missing+=" $f"; done
       die "nginx: TLS_MODE=files: missing or unreadable:$missing (TLS_CERT_DIR, TLS_CERT_FILE, TLS_KEY_FILE in .env; \`make certs\` makes dev ones). nginx not started." ;;
    *) die "nginx: $out" ;;
  esac
}

tls_port_check() {
  [ "$tls_mode" = off ] && return 0
  port_busy "${HTTPS_PORT:-8443}" && die "nginx: HTTPS port ${HTTPS_PORT:-8443} is already in use (set HTTPS_PORT)"
  return 0
}

# nginx answers at all (a pending ACME nginx says 503 to everything but challenges).
nginx_answers() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" || true)" != 000 ]; }

certbot_run() {
  command -v certbot >/dev/null || die "acme: certbot not found (apt-get install certbot, or scripts/deps)"
  mkdir -p "$state/letsencrypt" "$log_dir/letsencrypt"
  local env=()
  [ -n "${ACME_CA_BUNDLE:-}" ] && env=(REQUESTS_CA_BUNDLE="$ACME_CA_BUNDLE")
  env "${env[@]}" certbot "$@" --non-interactive --config-dir "$state/letsencrypt" \
    --work-dir "$state/letsencrypt/work" --logs-dir "$log_dir/letsencrypt" \
    >> "$log_dir/certbot.log" 2>&1 || { log_tail certbot; die "acme: certbot $1 failed (log: $log_dir/certbot.log)"; }
}

# First start in acme mode: get the certificate through nginx's webroot; the
# deploy hook reloads nginx, which then serves HTTPS.
acme_ensure() {
  [ "$tls_mode" = acme ] || return 0
  [ -s "$acme_live/fullchain.pem" ] && return 0
  [ -n "${ACME_DOMAINS:-}" ] || die "acme: TLS_MODE=acme needs ACME_DOMAINS (.env)"
  local args=(certonly --webroot -w "$ACME_WEBROOT" --server "$ACME_SERVER" --agree-tos
              --cert-name chat --deploy-hook "$root/scripts/local reload-nginx")
  if [ -n "${ACME_EMAIL:-}" ]; then args+=(--email "$ACME_EMAIL"); else args+=(--register-unsafely-without-email); fi
  local d
  for d in ${ACME_DOMAINS//,/ }; do args+=(-d "$d"); done
  certbot_run "${args[@]}"
  echo "acme: certificate for $ACME_DOMAINS from $ACME_SERVER in $acme_live"
}

acme_renew() {
  [ "$tls_mode" = acme ] || die "renew-certs: TLS_MODE is $tls_mode, not acme"
  local args=(renew --cert-name chat --no-random-sleep-on-renew)
  [ "${1:-}" = --force ] && args+=(--force-renewal)
  certbot_run "${args[@]}"
  echo "acme: renew done (nginx reloaded by the deploy hook when a certificate changed)"
}
