# Sourced by scripts/compose and scripts/local: backups of the app's Postgres
# database (make backup / make restore; scripts/local backup / restore).
#
# The caller defines `db_sh SCRIPT`, which runs the bash SCRIPT where pg_dump,
# pg_restore and psql reach the app's database as $POSTGRES_USER on $POSTGRES_DB
# (compose: inside the db container, whose local socket trusts its users;
# native: the host's Postgres binaries over TCP with the password in the
# environment), passing stdin and stdout through; and `die`. Nothing here
# starts or stops the app: the callers do that around backup_restore.
#
#   backup_create NAME  -> prints the path of BACKUP_DIR/NAME-<UTC time>.dump
#   backup_check FILE   -> fails unless FILE is a pg_dump custom-format archive
#   backup_restore FILE -> the database becomes FILE's, in ONE transaction
#   backup_restore_app FILE STOP START -> the whole `restore` command: check, ask, a
#                          safety dump, STOP the app, restore, START it, report
#
# Files: pg_dump's custom format (compressed, restorable by any pg_restore of
# the same major version or later), mode 0600 in a 0700 directory: a dump holds
# password and token hashes and every message.

backup_dir() {
  local dir=${BACKUP_DIR:?BACKUP_DIR is not set (.env.example)}
  [[ $dir = /* ]] || dir="$root/$dir"
  ( umask 077; mkdir -p "$dir" ) || die "BACKUP_DIR=$dir: cannot create it"
  echo "$dir"
}

backup_check() {
  local file=$1
  [ -f "$file" ] && [ -r "$file" ] || die "restore: $file is not a readable file"
  db_sh 'exec pg_restore --list > /dev/null' < "$file" 2>/dev/null \
    || die "restore: $file is not a backup made by make backup (pg_dump --format=custom): nothing changed"
}

backup_create() {
  local name=$1 dir stamp file partial n=1
  dir=$(backup_dir) || exit 1
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  file="$dir/$name-$stamp.dump"
  while [ -e "$file" ]; do n=$((n + 1)); file="$dir/$name-$stamp-$n.dump"; done
  partial="$file.partial"
  # Written under another name and renamed once checked: a failed or interrupted
  # dump never looks like a backup.
  if ! ( umask 077; db_sh 'exec pg_dump --format=custom --lock-wait-timeout=30s --username="$POSTGRES_USER" --dbname="$POSTGRES_DB"' > "$partial" ); then
    rm -f -- "$partial"
    die "backup: pg_dump failed (is the database up? its error is above); no backup written"
  fi
  if ! db_sh 'exec pg_restore --list > /dev/null' < "$partial"; then
    rm -f -- "$partial"
    die "backup: the dump does not read back (pg_restore --list); no backup written"
  fi
  mv -- "$partial" "$file"
  echo "$file"
}

# The whole restore is one transaction: the schema is dropped and the backup's
# objects and rows created in it, and COMMIT is sent only when pg_restore read
# the whole file. Any error (psql stops at the first one), a truncated file, or
# a lock the app still holds (lock_timeout) rolls everything back: the database
# is then exactly as before. Objects are owned by POSTGRES_USER (--no-owner):
# the role the app and migrate connect as, whatever role made the backup.
_BACKUP_RESTORE_SCRIPT='
set -o pipefail
{
  printf "%s\n" "BEGIN;" "SET LOCAL lock_timeout = '\''30s'\'';" "SET LOCAL client_min_messages = warning;" \
    "DROP SCHEMA public CASCADE;" \
    "CREATE SCHEMA public AUTHORIZATION pg_database_owner;" \
    "GRANT USAGE ON SCHEMA public TO PUBLIC;"
  pg_restore --no-owner --no-privileges --file=- && printf "%s\n" "COMMIT;"
} | psql -X -q -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname="$POSTGRES_DB" > /dev/null
'

backup_restore() {
  db_sh "$_BACKUP_RESTORE_SCRIPT" < "$1"
}

# The order is the point: nothing is touched until the file checks out, the operator
# said yes and the current data is saved; the app stops before the restore (no write
# lands between it and the restart, and no worker keeps a room's messages or ids from
# before it: ws drains, close 1012) and starts again after it, whether it worked or not.
backup_restore_app() {
  local file=$1 stop=$2 start=$3 safety failed=0
  backup_check "$file"
  backup_confirm_restore "$file"
  # A plain assignment, so a failed safety backup stops the restore (set -e).
  safety=$(backup_create chat-before-restore)
  echo "restore: the current data first went to $safety"
  "$stop"
  backup_restore "$file" || failed=1
  "$start"
  [ "$failed" = 0 ] || die "restore of $file failed (its error is above) and was rolled back: the data is as before"
  echo "restored $file"
}

# Restore asks first: it replaces every message and user.
backup_confirm_restore() {
  local file=$1 answer
  [ "${CONFIRM:-}" = yes ] && return 0
  [ -t 0 ] || die "restore replaces every message, user and token with those of $file: run it in a terminal to confirm, or with CONFIRM=yes; nothing changed"
  read -r -p "Replace every message, user and token with those of $file? Type yes: " answer
  [ "$answer" = yes ] || die "not confirmed: nothing changed"
}
