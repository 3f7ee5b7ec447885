# scripts/lib/common.sh: the helpers every script of scripts/ shares (sourced, never run):
# messages (log, warn, die), root and apt-get, cargo on PATH, Python venvs, free ports, URL
# helpers, and timed steps with a summary. It defines functions and state only; it runs nothing.
# A sourcing script may set SCRIPT (its name in messages) first; it defaults to scripts/<name>.
# shellcheck shell=bash

SCRIPT=${SCRIPT:-scripts/$(basename "$0")}
APT_UPDATED=0

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$SCRIPT" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$SCRIPT" "$*" >&2
    exit 1
}

# Microseconds since the epoch (EPOCHREALTIME may use ',' as decimal point).
now_us() { printf '%s' "${EPOCHREALTIME//[.,]/}"; }

# Seconds with one decimal from microseconds.
seconds_of_us() { printf '%d.%01ds' $(($1 / 1000000)) $(($1 % 1000000 / 100000)); }

# Run a command as root (directly, or with passwordless sudo).
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "root is needed to run: $* (run as root or configure passwordless sudo)"
    fi
}

apt_install() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q install -y "$@"
}

# cargo on PATH (rustup's ~/.cargo/bin when a login shell did not add it).
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
        PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install the Rust toolchain)"
}

# make_venv DIR [PYTHON]: a fresh venv in DIR (Debian's python3 ships venv separately: python3-venv
# is installed with apt-get when it is missing).
make_venv() {
    local dir=$1 python=${2:-python3}
    command -v "$python" >/dev/null 2>&1 || apt_install python3
    rm -rf "$dir"
    if ! "$python" -m venv "$dir" 2>/dev/null; then
        rm -rf "$dir"
        apt_install python3-venv
        "$python" -m venv "$dir"
    fi
}

# port_in_use PORT: does something accept TCP connections on 127.0.0.1:PORT?
port_in_use() {
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# free_port FIRST: the first port from FIRST that nothing listens on (at most 200 tried).
free_port() {
    local port=$1
    while port_in_use "$port"; do
        port=$((port + 1))
        ((port < $1 + 200)) || die "no free port in $1..$port"
    done
    printf '%s\n' "$port"
}

# Hide a password in a URL before printing it.
mask_url() { sed -E 's#(://[^:/@]+:)[^@/]*@#\1***@#' <<<"$1"; }

# url_with_database URL DB: same scheme/user/host/port/query, other database.
url_with_database() {
    local url=$1 db=$2 scheme rest authority query=''
    scheme=${url%%://*}
    rest=${url#*://}
    if [[ $rest == *\?* ]]; then
        query="?${rest#*\?}"
        rest=${rest%%\?*}
    fi
    authority=${rest%%/*}
    printf '%s://%s/%s%s\n' "$scheme" "$authority" "$db" "$query"
}

# database_of_url URL: the database name part (may be empty).
database_of_url() {
    local rest=${1#*://}
    rest=${rest%%\?*}
    if [[ $rest == */* ]]; then printf '%s\n' "${rest#*/}"; else printf '\n'; fi
}

# ------------------------------------------------------- timed steps and their summary

STEP_NAMES=()
STEP_TIMES=()
STEP_RESULTS=()
CURRENT_STEP=''
CURRENT_STEP_START=0

# run_step NAME CMD...: run, time and record one step. A failure exits via errexit; the EXIT trap
# then records the step as FAILED with finish_steps.
run_step() {
    local name=$1
    shift
    log "step: $name"
    CURRENT_STEP=$name
    CURRENT_STEP_START=$(now_us)
    "$@"
    STEP_NAMES+=("$name")
    STEP_TIMES+=("$(($(now_us) - CURRENT_STEP_START))")
    STEP_RESULTS+=(ok)
    CURRENT_STEP=''
}

# finish_steps: records a step cut short as FAILED and prints every step's time.
finish_steps() {
    local i us
    if [[ -n $CURRENT_STEP ]]; then
        STEP_NAMES+=("$CURRENT_STEP")
        STEP_TIMES+=("$(($(now_us) - CURRENT_STEP_START))")
        STEP_RESULTS+=(FAILED)
        CURRENT_STEP=''
    fi
    ((${#STEP_NAMES[@]})) || return 0
    printf '\n==> step times\n' >&2
    for i in "${!STEP_NAMES[@]}"; do
        us=${STEP_TIMES[$i]}
        printf '    %-10s %6s  %4d.%01ds\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" \
            $((us / 1000000)) $((us % 1000000 / 100000)) >&2
    done
}
