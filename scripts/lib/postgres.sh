# scripts/lib/postgres.sh: the one way sessionkeeper's tooling finds or starts a PostgreSQL server.
# scripts/test (find or start, then a fresh test database), scripts/bench (a private durable
# cluster) and the Rust tests that stop and restart their own clusters (tests/reliability/
# pg_cluster.rs, through the commands at the end) all use these functions: the same server
# binaries (newest /usr/lib/postgresql/<ver>/bin, else PATH), the same initdb options, the same
# owner (the `postgres` OS user when run as root: initdb refuses root).
#
# find_or_start_postgres picks, first that works:
#   a. $DATABASE_URL, if set and `psql "$DATABASE_URL" -c 'select 1'` works;
#   b. postgres://postgres@127.0.0.1:5432/postgres (trust auth);
#   c. Debian's cluster (/etc/postgresql/<ver>/main), started with
#      `pg_ctlcluster --skip-systemctl-redirect <ver> main start` if it is down. If it needs a
#      password for TCP connections (the Debian default), a role `sessionkeeper_test` (password
#      `sessionkeeper_test`, SUPERUSER) is created over the local socket as the `postgres` OS user;
#   d. installs `postgresql postgresql-contrib` with apt-get if the server is missing and retries
#      (c); otherwise a private throwaway cluster (start_private_cluster): trust auth, 127.0.0.1
#      only, first free port from PRIVATE_PG_FIRST_PORT, stopped again by stop_private_cluster.
# psql/pg_isready (postgresql-client) are installed with apt-get when missing.
# It leaves ADMIN_URL (a superuser connection) and PG_SOURCE (where it came from).
# shellcheck shell=bash

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_READY_TIMEOUT=${SESSIONKEEPER_TEST_PG_READY_TIMEOUT:-30}
PG_ROLE=sessionkeeper_test # only for a password-protected Debian cluster (c)
PG_ROLE_PASSWORD=sessionkeeper_test
PRIVATE_PG_FIRST_PORT=${PRIVATE_PG_FIRST_PORT:-55432}
# initdb options of every cluster the tooling makes.
INITDB_OPTIONS=(-U postgres --auth=trust --no-locale -E UTF8 --no-sync)
# A command prefix for pg_ctl start (scripts/bench pins the server to CPUs with taskset).
[[ -v PG_CTL_PREFIX ]] || PG_CTL_PREFIX=()

ADMIN_URL=''
PG_SOURCE=''
DATABASE_CREATED_URL=''
PRIVATE_PG_BINDIR='' # set once a private cluster runs: stop_private_cluster stops it
PRIVATE_PG_DATA=''
PRIVATE_PG_TMPDIR='' # only when the base directory is closed to the postgres user
PRIVATE_PG_LOCK_FD=''

# Run a command as the `postgres` OS user (or as ourselves when not root: a non-root user owns its
# private cluster itself). Runs from / so the postgres user never trips over an unreadable cwd.
as_pg_owner() {
    if [[ $EUID -ne 0 ]]; then
        "$@"
    else
        getent passwd postgres >/dev/null || die "OS user 'postgres' does not exist"
        (cd / && runuser -u postgres -- "$@")
    fi
}

# Run a command as the `postgres` OS user, for peer auth on Debian's socket.
as_postgres_user() {
    if [[ $(id -un) == postgres ]]; then
        "$@"
    elif [[ $EUID -eq 0 ]]; then
        getent passwd postgres >/dev/null || return 1
        (cd / && runuser -u postgres -- "$@")
    elif command -v sudo >/dev/null 2>&1 && sudo -n -u postgres true 2>/dev/null; then
        (cd / && sudo -n -u postgres -- "$@")
    else
        return 1
    fi
}

# newest_version GLOB_PREFIX GLOB_SUFFIX: the highest <ver> among existing PREFIX<ver>SUFFIX paths.
newest_version() {
    local path best='' v
    for path in "$1"*"$2"; do
        [[ -e $path ]] || continue
        v=${path#"$1"}
        v=${v%%"$2"}
        if [[ -z $best ]] || [[ $(printf '%s\n%s\n' "$best" "$v" | sort -V | tail -n1) == "$v" ]]; then
            best=$v
        fi
    done
    [[ -n $best ]] && printf '%s\n' "$best"
}

# Directory with initdb/pg_ctl: newest /usr/lib/postgresql/<ver>/bin, else the one on PATH.
pg_bindir() {
    local v
    if v=$(newest_version /usr/lib/postgresql/ /bin/pg_ctl) && [[ -x /usr/lib/postgresql/$v/bin/initdb ]]; then
        printf '/usr/lib/postgresql/%s/bin\n' "$v"
    elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    else
        return 1
    fi
}

ensure_psql() {
    if ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
        apt_install postgresql-client
    fi
    command -v psql >/dev/null 2>&1 || die "psql still not found after installing postgresql-client"
}

ensure_server_installed() {
    pg_bindir >/dev/null 2>&1 && return 0
    apt_install postgresql postgresql-contrib
    pg_bindir >/dev/null 2>&1 || die "PostgreSQL server binaries (initdb) not found after installing postgresql"
}

# pg_works URL: can we log in and run a query (never prompts for a password)?
pg_works() { PGCONNECT_TIMEOUT=5 psql -w -X -q -At -d "$1" -c 'select 1' >/dev/null 2>&1; }

# wait_ready URL: bounded pg_isready loop.
wait_ready() {
    local deadline=$((SECONDS + PG_READY_TIMEOUT))
    until pg_isready -q -t 2 -d "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# (a) $DATABASE_URL
try_database_url() {
    [[ -n ${DATABASE_URL:-} ]] || return 1
    if [[ $DATABASE_URL != postgres://* && $DATABASE_URL != postgresql://* ]]; then
        warn "DATABASE_URL is not a postgres:// URL; ignoring it"
        return 1
    fi
    if pg_works "$DATABASE_URL"; then
        ADMIN_URL=$DATABASE_URL
        PG_SOURCE='server from DATABASE_URL'
        return 0
    fi
    warn "DATABASE_URL is set but $(mask_url "$DATABASE_URL") does not answer; looking elsewhere"
    return 1
}

# (b) a trust-auth server on 127.0.0.1:5432
try_local_5432() {
    local url='postgres://postgres@127.0.0.1:5432/postgres'
    pg_works "$url" || return 1
    ADMIN_URL=$url
    PG_SOURCE='server already running on 127.0.0.1:5432'
}

# provision_password_role PORT: create/refresh the password role over the local socket as the
# postgres OS user (peer auth).
provision_password_role() {
    # shellcheck disable=SC2016 # $$ is PL/pgSQL dollar quoting, not a shell variable
    as_postgres_user psql -w -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$1" -d postgres \
        -c "DO \$\$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
                CREATE ROLE $PG_ROLE LOGIN SUPERUSER PASSWORD '$PG_ROLE_PASSWORD';
              ELSE
                ALTER ROLE $PG_ROLE LOGIN SUPERUSER PASSWORD '$PG_ROLE_PASSWORD';
              END IF;
            END \$\$;" >/dev/null
}

# (c) Debian's cluster <ver>/main; starts it when it is down. Called in `if` context (errexit is
# off there): every failure returns explicitly.
try_debian_cluster() {
    local ver port='' status='' url
    ver=$(newest_version /etc/postgresql/ /main/postgresql.conf) || return 1
    command -v pg_lsclusters >/dev/null 2>&1 || return 1
    read -r port status < <(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" { print $3, $4 }') || true
    [[ -n $port ]] || return 1
    if [[ $status != online* ]]; then
        log "starting Debian cluster $ver/main (port $port)"
        if ! as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start; then
            warn "could not start Debian cluster $ver/main"
            return 1
        fi
    fi
    if ! wait_ready "postgres://127.0.0.1:$port/postgres"; then
        warn "Debian cluster $ver/main did not become ready within ${PG_READY_TIMEOUT}s"
        return 1
    fi
    url="postgres://postgres@127.0.0.1:$port/postgres"
    if pg_works "$url"; then
        ADMIN_URL=$url
        PG_SOURCE="Debian cluster $ver/main"
        return 0
    fi
    # Default Debian auth wants a password on TCP: use our own password role.
    url="postgres://$PG_ROLE:$PG_ROLE_PASSWORD@127.0.0.1:$port/postgres"
    if provision_password_role "$port" && pg_works "$url"; then
        ADMIN_URL=$url
        PG_SOURCE="Debian cluster $ver/main (role $PG_ROLE)"
        return 0
    fi
    warn "Debian cluster $ver/main is running but not usable without a password"
    return 1
}

# init_cluster DATA PORT [CONF_LINE...]: initdb DATA (as the cluster's owner) with the tooling's
# options; the server listens on 127.0.0.1:PORT only, with CONF_LINEs appended to postgresql.conf.
init_cluster() {
    local data=$1 port=$2 bindir line
    shift 2
    bindir=$(pg_bindir) || die "initdb not found (is the postgresql package installed?)"
    if ! as_pg_owner "$bindir/initdb" -D "$data" "${INITDB_OPTIONS[@]}" >"$data.initdb.log" 2>&1; then
        cat "$data.initdb.log" >&2
        die "initdb failed"
    fi
    {
        printf '\n# --- added by %s ---\n' "$SCRIPT"
        printf "listen_addresses = '127.0.0.1'\nport = %s\nmax_connections = 200\n" "$port"
        for line in "$@"; do printf '%s\n' "$line"; done
    } | as_pg_owner tee -a "$data/postgresql.conf" >/dev/null
}

# start_private_cluster BASE [CONF_LINE...]: a fresh cluster in BASE/data on the first free port
# from PRIVATE_PG_FIRST_PORT, TCP only; pg_ctl runs under PG_CTL_PREFIX (e.g. taskset) when set.
# One cluster per BASE at a time (a lock held until the script exits). Sets ADMIN_URL, PG_SOURCE.
start_private_cluster() {
    local base=$1 bindir port
    shift
    bindir=$(pg_bindir) || die "initdb not found (is the postgresql package installed?)"
    mkdir -p "$base"
    if [[ $EUID -eq 0 ]]; then
        chown postgres:postgres "$base"
        if ! as_pg_owner test -w "$base"; then
            # Some parent directory is closed to the postgres user (e.g. /root).
            PRIVATE_PG_TMPDIR=$(mktemp -d "/tmp/sessionkeeper-$(basename "$base").XXXXXX")
            base=$PRIVATE_PG_TMPDIR
            chown postgres:postgres "$base"
        fi
    fi
    exec {PRIVATE_PG_LOCK_FD}>"$base/.lock"
    flock -n "$PRIVATE_PG_LOCK_FD" || die "another run is using the private cluster in $base; wait for it to finish"
    # Leftover server from an interrupted run on the same data directory?
    if [[ -f $base/data/postmaster.pid ]]; then
        as_pg_owner "$bindir/pg_ctl" -D "$base/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$base/data"
    port=$(free_port "$PRIVATE_PG_FIRST_PORT")
    log "initdb private cluster in $base/data ($bindir)"
    init_cluster "$base/data" "$port" "unix_socket_directories = ''" "$@"
    PRIVATE_PG_BINDIR=$bindir # from here on stop_private_cluster stops it
    PRIVATE_PG_DATA="$base/data"
    log "starting private cluster on 127.0.0.1:$port"
    # (the server must not inherit the lock fd, or it would outlive us holding it)
    if ! as_pg_owner "${PG_CTL_PREFIX[@]}" "$bindir/pg_ctl" -D "$base/data" -l "$base/postgres.log" -w \
        -t "$PG_READY_TIMEOUT" start >/dev/null {PRIVATE_PG_LOCK_FD}>&-; then
        tail -n 30 "$base/postgres.log" >&2 || true
        die "private PostgreSQL cluster failed to start (log: $base/postgres.log)"
    fi
    ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
    PG_SOURCE="private cluster $base/data"
}

# Stop the private cluster we started (EXIT trap; safe to call twice).
stop_private_cluster() {
    [[ -n $PRIVATE_PG_BINDIR && -n $PRIVATE_PG_DATA ]] || return 0
    if [[ -f $PRIVATE_PG_DATA/postmaster.pid ]]; then
        log "stopping private PostgreSQL cluster ($PRIVATE_PG_DATA)"
        as_pg_owner "$PRIVATE_PG_BINDIR/pg_ctl" -D "$PRIVATE_PG_DATA" -m fast -w -t 30 stop >/dev/null ||
            warn "could not stop private cluster in $PRIVATE_PG_DATA"
    fi
    [[ -z $PRIVATE_PG_TMPDIR ]] || rm -rf "$PRIVATE_PG_TMPDIR"
    PRIVATE_PG_BINDIR=''
}

# find_or_start_postgres [FORCE_PRIVATE]: a..d above (FORCE_PRIVATE=1: d only, a private cluster
# in target/pg-test without durability); waits until it is ready and logs in once.
find_or_start_postgres() {
    local throwaway=("fsync = off" "synchronous_commit = off" "full_page_writes = off")
    ensure_psql
    if [[ ${1:-0} == 1 ]]; then
        log "private cluster forced: skipping DATABASE_URL, :5432 and Debian cluster"
        ensure_server_installed
        start_private_cluster "$(pwd -P)/target/pg-test" "${throwaway[@]}"
    elif ! try_database_url && ! try_local_5432 && ! try_debian_cluster; then
        if ! pg_bindir >/dev/null 2>&1; then
            ensure_server_installed
            # Installing usually creates (and may start) Debian's cluster.
            try_debian_cluster || start_private_cluster "$(pwd -P)/target/pg-test" "${throwaway[@]}"
        else
            start_private_cluster "$(pwd -P)/target/pg-test" "${throwaway[@]}"
        fi
    fi
    wait_ready "$ADMIN_URL" ||
        die "PostgreSQL ($PG_SOURCE, $(mask_url "$ADMIN_URL")) not ready after ${PG_READY_TIMEOUT}s"
    pg_works "$ADMIN_URL" || die "cannot log in to $(mask_url "$ADMIN_URL")"
    log "using PostgreSQL: $PG_SOURCE at $(mask_url "$ADMIN_URL")"
}

# recreate_database NAME: drops and creates NAME on ADMIN_URL's server; sets DATABASE_CREATED_URL.
recreate_database() {
    local name=$1
    # Never drop the database we are connected to.
    [[ $(database_of_url "$ADMIN_URL") != "$name" ]] || ADMIN_URL=$(url_with_database "$ADMIN_URL" postgres)
    DATABASE_CREATED_URL=$(url_with_database "$ADMIN_URL" "$name")
    log "creating fresh database $name"
    PGCONNECT_TIMEOUT=10 PGOPTIONS='-c client_min_messages=warning' \
        psql -w -X -q -v ON_ERROR_STOP=1 -d "$ADMIN_URL" \
        -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" ||
        die "could not (re)create database $name"
    pg_works "$DATABASE_CREATED_URL" || die "cannot connect to $(mask_url "$DATABASE_CREATED_URL")"
}

# Run as a command, for the Rust tests' own clusters (tests/reliability/pg_cluster.rs):
#   bash scripts/lib/postgres.sh bindir                        the server binaries' directory
#   bash scripts/lib/postgres.sh init-cluster DATA PORT [CONF_LINE...]   init_cluster above
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-} in
    bindir) pg_bindir ;;
    init-cluster) shift && init_cluster "$@" ;;
    *) die "usage: $0 bindir | init-cluster DATA PORT [CONF_LINE...]" ;;
    esac
fi
