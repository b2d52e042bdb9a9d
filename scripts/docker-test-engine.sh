#!/usr/bin/env bash
# Give the test suite a real Docker engine and a PostgreSQL image, offline.
#
# Meant for sandboxes/CI machines where no Docker engine runs and no image
# registry (Docker Hub) is reachable, but the Debian apt mirror is:
#   * installs Debian's docker.io (dockerd, containerd, runc) if dockerd is missing;
#   * reuses an engine that already answers, otherwise starts a private dockerd
#     whose state (data, exec root, pidfile, socket, log) lives in one directory;
#   * builds `testdb-postgres:15` once per machine from debootstrap + the
#     Debian postgresql-15 package, with an entrypoint compatible with the
#     official `postgres` image (POSTGRES_USER/PASSWORD/DB, `postgres -c ...`).
#
# Usage:
#   scripts/docker-test-engine.sh [start]   ensure engine + image; the LAST line of
#                                           stdout is DOCKER_HOST=<url> (everything
#                                           else goes to stderr), e.g.
#       export "$(scripts/docker-test-engine.sh | tail -n1)"
#   scripts/docker-test-engine.sh stop      stop the dockerd this script started
#                                           (found by its pidfile); never touches
#                                           any other engine
#   scripts/docker-test-engine.sh status    say what answers and whether the image exists
#   scripts/docker-test-engine.sh selftest  start, then run the image with a published
#                                           port and query it with psql from the host
#   scripts/docker-test-engine.sh rebuild   rebuild the image even if it exists
#
# Environment:
#   TESTDB_DOCKER_STATE     state dir (default /var/tmp/testdb-docker)
#   TESTDB_DOCKER_IMAGE     image tag (default testdb-postgres:15)
#   TESTDB_DEBIAN_MIRROR    apt mirror for debootstrap (default: read from /etc/apt)
#   TESTDB_DEBIAN_SUITE     Debian suite (default bookworm; postgresql-15 is bookworm's)
#   TESTDB_DOCKER_STORAGE_DRIVER  force a storage driver (default: overlay2, else vfs)
#   TESTDB_DOCKER_START_TIMEOUT   seconds to wait for the engine (default 60)
#
# Needs root to install packages, start dockerd or build the image; a second
# run with everything in place only talks to the engine (root or group
# `docker`) and takes well under a second.
#
# Found on the Debian bookworm sandbox this was written on (Firecracker VM,
# kernel 6.x, cgroup v1, iptables-nft, docker.io 20.10.24): the first config
# works, i.e. plain overlay2 + default docker0 bridge + iptables; a container
# is reachable on -p 127.0.0.1::5432 about 3-4 s after `docker run`.
# Also checked there: --iptables=false keeps -p working (docker-proxy);
# --bridge=none silently drops -p (only --network host reaches the server);
# with $STATE on overlayfs, overlay2 fails ("driver not supported") and vfs
# works, but each `docker run` then copies the image (~20 s).
set -euo pipefail

STATE="${TESTDB_DOCKER_STATE:-/var/tmp/testdb-docker}"
SOCK="$STATE/docker.sock"
OUR_HOST="unix://$SOCK"
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
FLAGS_FILE="$STATE/dockerd.flags" # the dockerd flags that worked last time
IMAGE="${TESTDB_DOCKER_IMAGE:-testdb-postgres:15}"
SUITE="${TESTDB_DEBIAN_SUITE:-bookworm}"
START_TIMEOUT="${TESTDB_DOCKER_START_TIMEOUT:-60}"
DEFAULT_HOST="unix:///var/run/docker.sock"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENTRYPOINT_SRC="$SCRIPT_DIR/docker-image/docker-entrypoint.sh"

log() { printf '[docker-test-engine] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
	[ "$(id -u)" = 0 ] || die "must run as root to $1"
}

# `docker info` against a given DOCKER_HOST; `timeout` because a stale socket
# or a wedged daemon must not hang the caller.
engine_answers() {
	DOCKER_HOST="$1" timeout 15 docker info >/dev/null 2>&1
}

# The pid from our pidfile, if it is a live dockerd started with *our*
# pidfile (guards against pid reuse and against ever touching another dockerd).
our_dockerd_pid() {
	local pid
	[ -s "$PIDFILE" ] || return 1
	pid="$(cat "$PIDFILE")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[ -r "/proc/$pid/cmdline" ] || return 1
	tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qx -- "--pidfile=$PIDFILE" || return 1
	echo "$pid"
}

apt_install() {
	need_root "install $*"
	log "installing $* with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get update >&2
	# policy-rc.d / no init system: the packaged docker.service is not started;
	# we run our own dockerd below anyway.
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
}

# --------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------

# Try one dockerd configuration: start it detached, wait until it answers.
# Returns 0 if it answers, 1 if it exited (caller tries the next config);
# exits the script if it neither answers nor exits within START_TIMEOUT.
try_dockerd() {
	local pid i
	log "starting dockerd $*"
	printf '\n===== %s: dockerd %s\n' "$(date -u +%FT%TZ)" "$*" >>"$LOG"
	# setsid: own session, so the daemon survives the caller's shell/CI step
	# and its process-group signals. stdin/out/err go to the log so that
	# `$(scripts/docker-test-engine.sh)` does not wait for dockerd to exit.
	# 9>&- : do not let the daemon inherit (and hold forever) our flock fd.
	setsid dockerd "$@" </dev/null >>"$LOG" 2>&1 9>&- &
	pid=$!
	for ((i = 0; i < START_TIMEOUT * 2; i++)); do
		if engine_answers "$OUR_HOST"; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null || true
			# (its last line is the reason, e.g. "failed to start daemon: ...")
			log "dockerd exited during startup: $(tail -n 1 "$LOG")"
			return 1
		fi
		sleep 0.5
	done
	log "dockerd did not answer within ${START_TIMEOUT}s; log tail ($LOG):"
	tail -n 40 "$LOG" >&2
	kill "$pid" 2>/dev/null || true
	exit 1
}

start_dockerd() {
	need_root "start dockerd"
	command -v dockerd >/dev/null || apt_install docker.io
	command -v docker >/dev/null || apt_install docker.io # provides /usr/bin/docker too

	# A pidfile left by a dockerd that died (or whose pid was reused) would
	# make dockerd refuse to start.
	if [ -e "$PIDFILE" ] && ! our_dockerd_pid >/dev/null; then
		rm -f "$PIDFILE"
	fi
	[ -f "$LOG" ] && [ "$(stat -c %s "$LOG")" -gt 5000000 ] && mv -f "$LOG" "$LOG.1"

	# Flags every attempt shares.  Everything lives under $STATE so this
	# engine never collides with a system dockerd (/var/lib/docker,
	# /var/run/docker, /var/run/docker.sock):
	#   --data-root   images/containers; persistent, so the image is built once
	#   --exec-root   runtime state incl. dockerd's own supervised containerd
	#   --pidfile     what `stop` uses to find (only) this daemon
	#   -H unix://    a private unix socket only; no TCP listener
	local base=(
		--data-root="$STATE/data"
		--exec-root="$STATE/exec"
		--pidfile="$PIDFILE"
		--host="$OUR_HOST"
	)

	# Storage: overlay2 is fast (copy-on-write layers); it fails e.g. when
	# $STATE is itself on overlayfs (docker-in-docker). vfs works everywhere
	# but copies the whole image (~400 MB) for each container.
	local drivers=(overlay2 vfs)
	[ -n "${TESTDB_DOCKER_STORAGE_DRIVER:-}" ] && drivers=("$TESTDB_DOCKER_STORAGE_DRIVER")

	# Networking, best first. Tests publish ports (-p 127.0.0.1::5432):
	#  1. defaults: docker0 bridge + iptables NAT; 127.0.0.1 ports are
	#     served by docker-proxy (the userland proxy, on by default).
	#  2. bridge but no iptables (kernel without netfilter/nat, or no
	#     permission to change it): docker-proxy still forwards
	#     127.0.0.1:PORT to the container over docker0, so -p keeps working
	#     for the host; containers just have no outbound NAT (not needed).
	#  3. no bridge at all: only `--network host` containers work; -p is
	#     silently meaningless. Last resort, warned about below.
	local nets=(
		""
		"--iptables=false --ip-masq=false"
		"--bridge=none --iptables=false --ip-masq=false"
	)

	local d n a extra
	# Reuse what worked last time first (keeps the same storage driver, so
	# the images already in --data-root stay visible: each driver has its
	# own image store, a switch means rebuilding the image).
	if [ -s "$FLAGS_FILE" ] && [ -z "${TESTDB_DOCKER_STORAGE_DRIVER:-}" ]; then
		a="$(cat "$FLAGS_FILE")"
		read -r -a extra <<<"$a"
		try_dockerd "${base[@]}" "${extra[@]}" && { started_with "$a"; return 0; }
	fi
	for d in "${drivers[@]}"; do
		for n in "${nets[@]}"; do
			a="--storage-driver=$d${n:+ $n}"
			read -r -a extra <<<"$a"
			try_dockerd "${base[@]}" "${extra[@]}" && { started_with "$a"; return 0; }
			# The storage driver itself is unusable: other network
			# settings will not help, go to the next driver.
			tail -n 3 "$LOG" | grep -q 'error initializing graphdriver' && break
		done
	done
	log "no dockerd configuration worked; see $LOG"
	tail -n 40 "$LOG" >&2
	exit 1
}

started_with() {
	printf '%s\n' "$1" >"$FLAGS_FILE"
	log "dockerd is up (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'), flags: $1; log: $LOG)"
	case "$1" in
		*--bridge=none*) log "WARNING: no bridge network here: port publishing (-p) will NOT work; use --network host" ;;
	esac
}

# Sets DOCKER_HOST to an engine that answers, starting ours if needed.
ensure_engine() {
	local candidates=("$OUR_HOST") c pid
	# An engine the caller already points at, then the system default.
	if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "$OUR_HOST" ]; then
		candidates+=("$DOCKER_HOST")
	fi
	[ "$DEFAULT_HOST" != "${DOCKER_HOST:-}" ] && candidates+=("$DEFAULT_HOST")
	for c in "${candidates[@]}"; do
		if engine_answers "$c"; then
			log "reusing the engine at $c"
			export DOCKER_HOST="$c"
			return 0
		fi
	done

	if [ -S "$SOCK" ] && ! [ -w "$SOCK" ]; then
		die "no permission on $SOCK (run as root or as a member of group $(stat -c %G "$SOCK"))"
	fi

	# Our dockerd runs but does not answer yet (another run just started it):
	# wait for it instead of starting a second one.
	if pid="$(our_dockerd_pid)"; then
		log "dockerd (pid $pid) is running but not answering yet; waiting"
		local i
		for ((i = 0; i < START_TIMEOUT * 2; i++)); do
			engine_answers "$OUR_HOST" && { export DOCKER_HOST="$OUR_HOST"; return 0; }
			sleep 0.5
		done
		log "dockerd (pid $pid) did not answer within ${START_TIMEOUT}s; log tail:"
		tail -n 40 "$LOG" >&2
		exit 1
	fi

	start_dockerd
	export DOCKER_HOST="$OUR_HOST"
}

# --------------------------------------------------------------------------
# Image
# --------------------------------------------------------------------------

# The Debian mirror for $SUITE from the machine's apt configuration (the only
# one reachable here): one-line *.list files and deb822 *.sources files.
detect_mirror() {
	if [ -n "${TESTDB_DEBIAN_MIRROR:-}" ]; then
		echo "$TESTDB_DEBIAN_MIRROR"
		return
	fi
	local files=() f
	[ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
	for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && files+=("$f")
	done
	[ "${#files[@]}" -gt 0 ] || return 1
	awk -v suite="$SUITE" '
		function emit(u) { if (u ~ /^(https?|ftp|file):\/\//) { print u; found = 1; exit } }
		FNR == 1 { flush() }
		# one-line format: deb [options] URI SUITE COMPONENT...
		FILENAME ~ /\.list$/ {
			line = $0; sub(/#.*/, "", line); sub(/\[[^]]*\]/, "", line)
			n = split(line, w, /[ \t]+/); i = (w[1] == "" ? 2 : 1)
			if (w[i] == "deb" && w[i + 2] == suite) emit(w[i + 1])
			next
		}
		# deb822 format: paragraphs of "Key: value" separated by blank lines
		function flush(   n, u, i) {
			if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && (" " suites " ") ~ ("[ \t]" suite "[ \t]")) {
				n = split(uris, u, /[ \t]+/)
				for (i = 1; i <= n; i++) if (u[i] != "") emit(u[i])
			}
			types = uris = suites = enabled = ""
		}
		/^[ \t]*$/ { flush(); next }
		/^[ \t]*#/ { next }
		tolower($1) == "types:"   { types = $0;  sub(/^[^:]*:[ \t]*/, "", types) }
		tolower($1) == "uris:"    { uris = $0;   sub(/^[^:]*:[ \t]*/, "", uris) }
		tolower($1) == "suites:"  { suites = $0; sub(/^[^:]*:[ \t]*/, "", suites) }
		tolower($1) == "enabled:" { enabled = tolower($2) }
		END { if (!found) flush() }
	' "${files[@]}"
}

# Label that ties the image to the entrypoint it contains: if
# scripts/docker-image/docker-entrypoint.sh changes, the cached image is stale.
entrypoint_sum() { sha256sum "$ENTRYPOINT_SRC" | cut -d' ' -f1; }
LABEL_KEY="org.testdb.entrypoint-sha256"

image_is_current() {
	local have
	have="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$IMAGE" 2>/dev/null)" || return 1
	# An image without our label was made by someone else: take it as is.
	if [ -z "$have" ] || [ "$have" = "<no value>" ] || [ "$have" = "$(entrypoint_sum)" ]; then
		return 0
	fi
	log "$IMAGE was built from another docker-entrypoint.sh; rebuilding"
	return 1
}

BUILD_DIR=""
cleanup_build() {
	[ -n "$BUILD_DIR" ] || return 0
	# debootstrap mounts proc/sys inside the target; if it died they may
	# still be mounted, and rm -rf must not descend into them.
	local m
	awk -v d="$BUILD_DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf --one-file-system "$BUILD_DIR"
}

build_image() {
	need_root "build $IMAGE (debootstrap)"
	[ -f "$ENTRYPOINT_SRC" ] || die "missing $ENTRYPOINT_SRC"
	command -v debootstrap >/dev/null || apt_install debootstrap
	local mirror
	mirror="$(detect_mirror)" || true
	[ -n "$mirror" ] || die "no apt mirror for '$SUITE' in /etc/apt/sources.list{,.d}; set TESTDB_DEBIAN_MIRROR"

	BUILD_DIR="$STATE/build"
	trap cleanup_build EXIT
	cleanup_build # leftovers of an interrupted build
	local rootfs="$BUILD_DIR/rootfs" blog="$STATE/build.log"
	mkdir -p "$BUILD_DIR"
	local t0=$SECONDS
	log "building $IMAGE: debootstrap $SUITE from $mirror (takes a minute or more; log: $blog)"
	# minbase: only essential packages + apt; --include pulls postgresql-15
	# and its dependencies (postgresql-common, tzdata, locales, llvm for JIT...).
	if ! debootstrap --variant=minbase --include=postgresql-15 \
		"$SUITE" "$rootfs" "$mirror" >"$blog" 2>&1; then
		tail -n 30 "$blog" >&2
		die "debootstrap failed (full log: $blog)"
	fi
	log "debootstrap done in $((SECONDS - t0))s"

	# Slim the tree: nothing below is used by the server.
	#  - .debs and apt indexes (debootstrap keeps the debs it installed);
	#  - docs/man pages;
	#  - the 15/main cluster postgresql-common's postinst created (we
	#    initdb into $PGDATA at container start instead);
	#  - host files debootstrap copied in (docker bind-mounts its own);
	#  - /dev nodes (docker mounts a fresh /dev).
	# (${rootfs:?} guards against ever expanding to /dev/*, /usr/share/doc/*...)
	rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/cache/apt/*.bin \
		"${rootfs:?}"/var/lib/apt/lists/*_* \
		"${rootfs:?}"/usr/share/doc/* "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/usr/share/info/* \
		"${rootfs:?}"/var/lib/postgresql/15 "${rootfs:?}"/etc/postgresql/15 \
		"${rootfs:?}"/etc/hostname "${rootfs:?}"/etc/resolv.conf \
		"${rootfs:?}"/dev/*
	find "${rootfs:?}"/var/log -type f -delete

	install -m 0755 "$ENTRYPOINT_SRC" "$rootfs/usr/local/bin/docker-entrypoint.sh"
	# Same layout as the official image: PGDATA owned by postgres, mode 700;
	# an optional init-scripts dir.
	mkdir -p "$rootfs/var/lib/postgresql/data" "$rootfs/docker-entrypoint-initdb.d"
	chroot "$rootfs" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
	chmod 700 "$rootfs/var/lib/postgresql/data"

	log "importing $IMAGE ($(du -sm "$rootfs" | cut -f1) MB)"
	local old_id base_id
	old_id="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
	# --numeric-owner: keep the rootfs' uids (postgres is 100 there, which
	# may be another name on the host). The --change lines give the image
	# the official postgres image's interface:
	#   ENV PATH     postgres/initdb/pg_ctl are not on Debian's default PATH
	#   ENV LANG     initdb then creates UTF8 databases (minbase has only
	#                glibc's built-in C.UTF-8; without LANG it would be SQL_ASCII)
	#   ENV PGDATA   where the entrypoint initdb's (tmpfs-mountable)
	#   LABEL        the entrypoint's checksum, see image_is_current
	base_id="$(tar --numeric-owner -C "$rootfs" -c . | docker import \
		--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
		--change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV LANG=C.UTF-8' \
		--change 'ENV PGDATA=/var/lib/postgresql/data' \
		--change 'EXPOSE 5432' \
		--change "LABEL $LABEL_KEY=$(entrypoint_sum)" \
		--change 'CMD ["postgres"]' \
		--message "debootstrap $SUITE postgresql-15 from $mirror" \
		-)"
	# STOPSIGNAL SIGINT (as in the official image) = postgres "fast"
	# shutdown; the default SIGTERM is "smart" shutdown, which waits for
	# connected clients and so makes `docker stop` run into its 10 s timeout
	# and SIGKILL. `docker import --change` rejects STOPSIGNAL (dockerd
	# 20.10), so add it with a metadata-only build (no new layer, no
	# registry access since the base is local). DOCKER_BUILDKIT=0: the
	# legacy builder, because the buildx plugin is usually not installed.
	printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$base_id" |
		DOCKER_BUILDKIT=0 docker build --quiet --tag "$IMAGE" - >>"$blog" 2>&1 ||
		{ tail -n 20 "$blog" >&2; die "docker build (STOPSIGNAL) failed"; }
	# A rebuild leaves the previous image untagged; free its space (fails
	# harmlessly if a container still uses it).
	if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
		docker rmi "$old_id" >/dev/null 2>&1 || true
	fi
	cleanup_build
	trap - EXIT
	BUILD_DIR=""
	log "built $IMAGE in $((SECONDS - t0))s ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1000000}'))"
}

ensure_image() {
	if image_is_current; then
		log "image $IMAGE present"
		return 0
	fi
	build_image
}

# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

lock() {
	# Serialise concurrent runs (parallel CI jobs) so only one starts
	# dockerd / runs debootstrap. A non-root caller that cannot create the
	# lock file cannot do any of that either, so it just goes on unlocked.
	mkdir -p "$STATE" 2>/dev/null || true
	if { exec 9>>"$STATE/.lock"; } 2>/dev/null; then
		flock 9
	fi
}

cmd_start() {
	lock
	ensure_engine
	ensure_image
	echo "DOCKER_HOST=$DOCKER_HOST"
}

cmd_rebuild() {
	lock
	ensure_engine
	build_image
	echo "DOCKER_HOST=$DOCKER_HOST"
}

cmd_stop() {
	lock
	local pid i
	if ! pid="$(our_dockerd_pid)"; then
		log "no dockerd started by this script is running (pidfile $PIDFILE)"
		return 0
	fi
	log "stopping dockerd pid $pid (it stops its containers and its containerd)"
	kill -TERM "$pid"
	# dockerd gives containers 15 s (shutdown-timeout) before killing them.
	for ((i = 0; i < 120; i++)); do
		kill -0 "$pid" 2>/dev/null || { log "stopped"; return 0; }
		sleep 0.5
	done
	die "dockerd pid $pid still running after 60s; see $LOG"
}

cmd_status() {
	local c pid
	if pid="$(our_dockerd_pid)"; then
		log "our dockerd: pid $pid, flags: $(cat "$FLAGS_FILE" 2>/dev/null)"
	else
		log "our dockerd: not running"
	fi
	for c in "$OUR_HOST" ${DOCKER_HOST:+"$DOCKER_HOST"} "$DEFAULT_HOST"; do
		if engine_answers "$c"; then
			log "engine answers at $c"
			if DOCKER_HOST="$c" docker image inspect "$IMAGE" >/dev/null 2>&1; then
				log "  image $IMAGE: present"
			else
				log "  image $IMAGE: missing"
			fi
			echo "DOCKER_HOST=$c"
			return 0
		fi
		log "no engine at $c"
	done
	return 1
}

cmd_selftest() {
	cmd_start >/dev/null
	local cid port i out
	cid="$(docker run -d --rm -e POSTGRES_USER=u -e POSTGRES_PASSWORD=p -e POSTGRES_DB=d \
		-p 127.0.0.1::5432 --tmpfs /var/lib/postgresql/data "$IMAGE" postgres -c fsync=off)"
	# shellcheck disable=SC2064 # expand $cid now
	trap "docker rm -f $cid >/dev/null 2>&1 || true" EXIT
	port="$(docker port "$cid" 5432/tcp | head -n1)"
	port="${port##*:}"
	log "container ${cid:0:12} publishes 5432 on 127.0.0.1:$port"
	command -v psql >/dev/null || die "psql not installed on the host (apt-get install postgresql-client)"
	for ((i = 0; i < 60; i++)); do
		if out="$(PGPASSWORD=p PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p "$port" -U u d -Atc \
			"select current_user, current_database(), current_setting('fsync'), pg_encoding_to_char(encoding), version() from pg_database where datname = current_database()" 2>&1)"; then
			log "selftest OK: $out"
			echo "DOCKER_HOST=$DOCKER_HOST"
			return 0
		fi
		sleep 0.5
	done
	log "last psql error: $out"
	docker logs "$cid" >&2 || true
	die "selftest failed: could not query PostgreSQL through the published port"
}

case "${1:-start}" in
	start) cmd_start ;;
	stop) cmd_stop ;;
	status) cmd_status ;;
	selftest) cmd_selftest ;;
	rebuild) cmd_rebuild ;;
	-h | --help | help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" ;;
	*) die "unknown command '$1' (try --help)" ;;
esac
