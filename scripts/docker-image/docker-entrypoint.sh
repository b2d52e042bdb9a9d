#!/bin/bash
# Entrypoint of the offline-built `testdb-postgres:15` image (see
# scripts/docker-test-engine.sh, which copies this file into the image as
# /usr/local/bin/docker-entrypoint.sh).
#
# It mimics the parts of the official `postgres` image's entrypoint that the
# test suite relies on:
#   POSTGRES_USER            superuser role to create        (default: postgres)
#   POSTGRES_PASSWORD        its password (required unless POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_DB              database to create              (default: $POSTGRES_USER)
#   POSTGRES_INITDB_ARGS     extra initdb arguments, e.g. "--no-sync"
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP clients (default: scram-sha-256; md5 and trust work too)
#   PGDATA                   data directory (default: /var/lib/postgresql/data)
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz  run once after the first initdb
#
# Command conventions (same as the official image):
#   (no args) / `postgres [-c key=value ...]`  -> init if needed, then run the server
#   `-c key=value ...` (first arg starts with -) -> same, `postgres` is implied
#   anything else (e.g. `bash`)                -> exec'd as is, no initialisation
#
# The server always listens on all addresses (listen_addresses='*'); any extra
# arguments (e.g. `-c fsync=off`) are passed through to `postgres`.
set -Eeuo pipefail

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# `docker run IMAGE -c fsync=off` -> `postgres -c fsync=off`
if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

# Not a server start: run the requested command untouched.
if [ "$1" != 'postgres' ] && [ "$1" != 'postmaster' ]; then
	exec "$@"
fi
shift # the remaining args are options for the postgres binary

if [ "$(id -u)" = '0' ]; then
	# Running as root (the default): prepare directories, then re-run this
	# script as the `postgres` OS user.  With `--tmpfs $PGDATA` (or a fresh
	# volume) the directory exists but is empty, root-owned and often mode
	# 1777; postgres refuses to use a data dir that is not owned by it or
	# that has group/other permissions, hence chown + chmod 700.
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	chmod 2775 /var/run/postgresql
	# setpriv (util-linux, always present) is our `gosu`: drop to postgres
	# and exec, keeping postgres as PID 1 so `docker stop` signals it.
	exec setpriv --reuid=postgres --regid=postgres --init-groups \
		env HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres \
		"${BASH_SOURCE[0]}" postgres "$@"
fi

# Running as the postgres user from here on.
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
: "${POSTGRES_INITDB_ARGS:=}"
export POSTGRES_USER POSTGRES_DB

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
		die "database is uninitialized and no superuser password is set.
    Pass -e POSTGRES_PASSWORD=... (or -e POSTGRES_HOST_AUTH_METHOD=trust to allow
    all connections without a password; never do that outside throwaway tests)."
	fi
	if [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]; then
		die "$PGDATA is not empty but has no PG_VERSION; refusing to initdb over it"
	fi

	log "initializing database cluster in $PGDATA (superuser: $POSTGRES_USER)"
	# The password goes through a pipe, never the command line (ps) or disk.
	# Local (unix socket) connections inside the container are trusted, like
	# in the official image; TCP connections need a password (see pg_hba below).
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is intentionally word-split
	initdb --username="$POSTGRES_USER" \
		--pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
		--auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" \
		$POSTGRES_INITDB_ARGS >&2

	# TCP from anywhere (the host reaches us through docker's port publishing,
	# i.e. from the bridge gateway or docker-proxy, not from 127.0.0.1).
	# scram-sha-256 verifiers are stored by default (password_encryption), and
	# pg_hba `md5` also accepts them, so `-e POSTGRES_HOST_AUTH_METHOD=md5` works.
	{
		echo
		echo "# added by docker-entrypoint.sh"
		echo "host all all 0.0.0.0/0 $POSTGRES_HOST_AUTH_METHOD"
		echo "host all all ::/0 $POSTGRES_HOST_AUTH_METHOD"
	} >>"$PGDATA/pg_hba.conf"

	# Temporary server on the unix socket only (listen_addresses=''), so TCP
	# clients polling the published port cannot connect before we are done.
	# The user's extra server options (e.g. -c fsync=off) apply to it as well;
	# pg_ctl -o takes one shell-quoted string, hence printf %q.
	pg_ctl -D "$PGDATA" -w -t 60 \
		-o "$(printf '%q ' "$@") -c listen_addresses='' -p 5432" start >&2
	psql_local=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" --host /var/run/postgresql)

	if [ "$POSTGRES_DB" != 'postgres' ]; then
		log "creating database $POSTGRES_DB"
		"${psql_local[@]}" --dbname postgres --set db="$POSTGRES_DB" >&2 <<-'EOSQL'
			CREATE DATABASE :"db";
		EOSQL
	fi

	for f in /docker-entrypoint-initdb.d/*; do
		[ -e "$f" ] || continue
		# shellcheck disable=SC1090 # sourcing user-provided init scripts
		case "$f" in
			*.sh)     log "running $f"; . "$f" ;;
			*.sql)    log "running $f"; "${psql_local[@]}" --dbname "$POSTGRES_DB" -f "$f" >&2 ;;
			*.sql.gz) log "running $f"; gunzip -c "$f" | "${psql_local[@]}" --dbname "$POSTGRES_DB" >&2 ;;
			*)        log "ignoring $f" ;;
		esac
	done

	pg_ctl -D "$PGDATA" -m fast -w stop >&2
	log "init done; starting server"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
