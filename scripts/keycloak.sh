#!/usr/bin/env bash
# Run a real Keycloak locally (127.0.0.1 only) for the live-server test runs.
#
#   scripts/keycloak.sh fetch    download (Maven) and unpack the distribution if not there yet
#   scripts/keycloak.sh start    fresh start: wipe server data, re-import the realm fixture
#   scripts/keycloak.sh restart  start again keeping data (use after `kill` to simulate recovery)
#                                (both stop a server that is still running first)
#   scripts/keycloak.sh stop     graceful stop (SIGTERM), SIGKILL after KC_STOP_TIMEOUT seconds
#   scripts/keycloak.sh kill     SIGKILL (simulate a crash)
#   scripts/keycloak.sh pause    SIGSTOP (connections are accepted but never answered)
#   scripts/keycloak.sh resume   SIGCONT
#   scripts/keycloak.sh status   prints state; exit 0 running, 1 paused, 3 not running
#   scripts/keycloak.sh logs [N|-f]  tail the server log (last N lines, default 100, or follow)
#   scripts/keycloak.sh url      prints the base URL
#
# Environment: KC_VERSION (default 26.7.3), KC_PORT (default 18080), KC_READY_TIMEOUT (default 240 s),
# KC_STOP_TIMEOUT (default 30 s), JAVA_HOME (default: the Java 17 JDK if present),
# KC_DB_URL_PROPERTIES (default ";WRITE_DELAY=0": H2 commits durable before SIGKILL).
#
# The distribution is org.keycloak:keycloak-quarkus-dist:${KC_VERSION}:zip from Maven Central,
# fetched with `mvn dependency:get` into ~/.m2 and unpacked under <repo>/.keycloak/.
set -euo pipefail

# Version choice: 26.7.3 is the newest 26.x served by Maven Central here (26.4.7, 26.5.6,
# 26.7.0 were the others). Every class in its lib/ is Java 17 bytecode (class file
# major <= 61) and it boots and answers the whole catalogue (tests/fixtures/keycloak-answers.md)
# on OpenJDK 17, so the Temurin 25 JDK is not needed. KC_VERSION overrides it (the version
# matrix of issue 18 also runs 26.4.7, the oldest 26.x served); each version is unpacked (and
# keeps its data) in its own directory. The PID and log files are shared: `stop` stops the
# server that runs, whichever version it is.
KC_VERSION="${KC_VERSION:-26.7.3}"

KC_PORT="${KC_PORT:-18080}"
KC_HOST="127.0.0.1"
KC_REALM="resilient-test"
KC_READY_TIMEOUT="${KC_READY_TIMEOUT:-240}"
KC_STOP_TIMEOUT="${KC_STOP_TIMEOUT:-30}"

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd -- "${SCRIPT_DIR}/.." && pwd)"
KC_ROOT="${REPO_DIR}/.keycloak"
KC_DIST="${KC_ROOT}/keycloak-${KC_VERSION}"
KC_PID_FILE="${KC_ROOT}/keycloak.pid"
KC_LOG_FILE="${KC_ROOT}/keycloak.log"
REALM_FILE="${REPO_DIR}/tests/fixtures/realm-${KC_REALM}.json"
KC_ZIP="${HOME}/.m2/repository/org/keycloak/keycloak-quarkus-dist/${KC_VERSION}/keycloak-quarkus-dist-${KC_VERSION}.zip"

base_url() { printf 'http://%s:%s' "${KC_HOST}" "${KC_PORT}"; }
ready_url() { printf '%s/realms/%s/.well-known/openid-configuration' "$(base_url)" "${KC_REALM}"; }

log() { printf 'keycloak.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- process bookkeeping ----------------------------------------------------------------

read_pid() {
    local pid=""
    if [[ -f "${KC_PID_FILE}" ]]; then
        pid="$(tr -dc '0-9' <"${KC_PID_FILE}")"
    fi
    printf '%s' "${pid}"
}

# True if the PID file names a live process.
is_running() {
    local pid
    pid="$(read_pid)"
    [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null
}

# True if the process is stopped by SIGSTOP (state T in /proc/<pid>/stat).
is_paused() {
    local pid stat
    pid="$(read_pid)"
    [[ -n "${pid}" && -r "/proc/${pid}/stat" ]] || return 1
    stat="$(<"/proc/${pid}/stat")"
    stat="${stat##*) }"
    [[ "${stat:0:1}" == "T" ]]
}

# Send a signal to the server's whole process group: the recorded pid is kc.sh, started via
# setsid so it leads its own group, and java runs either as its child or (after a
# re-augmentation) in its place. SIGSTOP/SIGKILL must reach java itself, hence the group.
# Falls back to the pid alone.
signal_server() {
    local sig="$1" pid
    pid="$(read_pid)"
    [[ -n "${pid}" ]] || return 1
    kill "-${sig}" -- "-${pid}" 2>/dev/null || kill "-${sig}" "${pid}" 2>/dev/null
}

port_in_use() {
    (exec 3<>"/dev/tcp/${KC_HOST}/${KC_PORT}") 2>/dev/null
}

wait_gone() {
    local pid="$1" bound="$2" waited=0
    while kill -0 "${pid}" 2>/dev/null; do
        if ((waited >= bound * 10)); then
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    return 0
}

# --- distribution ----------------------------------------------------------------------

ensure_dist() {
    if [[ -x "${KC_DIST}/bin/kc.sh" ]]; then
        return 0
    fi
    if [[ ! -f "${KC_ZIP}" ]]; then
        command -v mvn >/dev/null 2>&1 || die "mvn not found and ${KC_ZIP} is missing"
        log "fetching org.keycloak:keycloak-quarkus-dist:${KC_VERSION}:zip from Maven"
        mvn -B -q dependency:get \
            "-Dartifact=org.keycloak:keycloak-quarkus-dist:${KC_VERSION}:zip" \
            -Dtransitive=false </dev/null
        [[ -f "${KC_ZIP}" ]] || die "download finished but ${KC_ZIP} is missing"
    fi
    command -v unzip >/dev/null 2>&1 || die "unzip not found"
    mkdir -p "${KC_ROOT}"
    local tmp="${KC_ROOT}/unpack.$$"
    rm -rf "${tmp}"
    mkdir -p "${tmp}"
    log "unpacking ${KC_ZIP}"
    unzip -q "${KC_ZIP}" -d "${tmp}"
    [[ -d "${tmp}/keycloak-${KC_VERSION}" ]] || die "unexpected zip layout in ${KC_ZIP}"
    rm -rf "${KC_DIST}"
    mv "${tmp}/keycloak-${KC_VERSION}" "${KC_DIST}"
    rm -rf "${tmp}"
}

choose_java() {
    local jdk
    if [[ -z "${JAVA_HOME:-}" ]]; then
        # Debian/Ubuntu's OpenJDK 17, whatever the architecture (amd64, arm64, ...).
        for jdk in /usr/lib/jvm/java-17-openjdk-*; do
            if [[ -x "${jdk}/bin/java" ]]; then
                export JAVA_HOME="${jdk}"
                break
            fi
        done
    fi
    if [[ -n "${JAVA_HOME:-}" ]]; then
        [[ -x "${JAVA_HOME}/bin/java" ]] || die "JAVA_HOME=${JAVA_HOME} has no bin/java"
    else
        command -v java >/dev/null 2>&1 || die "no java found (set JAVA_HOME)"
    fi
}

# --- start / wait ----------------------------------------------------------------------

launch() {
    local fresh="$1"
    if is_running; then
        log "already running (pid $(read_pid)); stopping it first"
        cmd_stop
    fi
    rm -f "${KC_PID_FILE}"
    [[ -f "${REALM_FILE}" ]] || die "realm fixture not found: ${REALM_FILE}"
    # Something else on the port would answer the readiness probe in our place.
    if port_in_use; then
        die "port ${KC_HOST}:${KC_PORT} is already in use by another process"
    fi
    ensure_dist
    choose_java

    if [[ "${fresh}" == "fresh" ]]; then
        # Dev mode keeps its H2 database and everything else under data/.
        rm -rf "${KC_DIST}/data"
    fi
    mkdir -p "${KC_DIST}/data/import"
    cp "${REALM_FILE}" "${KC_DIST}/data/import/"

    # H2 (the dev database) flushes commits lazily (WRITE_DELAY, 500 ms by default): a user
    # created less than ~0.5 s before a SIGKILL was gone after the restart (measured: lost at
    # 0 and 0.3 s, kept at 0.6 s). `kill` simulates a crash of Keycloak, not of its database
    # (a production database keeps committed data), so commits are made durable at once.
    # Keycloak adds its own NON_KEYWORDS/DB_CLOSE_ON_EXIT settings to these.
    KC_DB_URL_PROPERTIES="${KC_DB_URL_PROPERTIES:-;WRITE_DELAY=0}"

    # Modest heap: the machine has 2 cores and is shared with compilers.
    export JAVA_OPTS_KC_HEAP="${JAVA_OPTS_KC_HEAP:--Xms64m -Xmx512m}"
    # Throwaway master-realm admin (only for poking at the console; tests never use it).
    export KC_BOOTSTRAP_ADMIN_USERNAME="${KC_BOOTSTRAP_ADMIN_USERNAME:-kc-admin}"
    export KC_BOOTSTRAP_ADMIN_PASSWORD="${KC_BOOTSTRAP_ADMIN_PASSWORD:-kc-admin-throwaway-pw}"

    if [[ "${fresh}" == "fresh" ]]; then
        : >"${KC_LOG_FILE}"
    else
        printf '\n===== restart %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"${KC_LOG_FILE}"
    fi

    # setsid: own session + process group (pgid == $!), so signals reach kc.sh and java and
    # never this shell; nohup + </dev/null: no terminal or stdin needed (CI).
    (
        cd "${KC_DIST}"
        exec setsid nohup bin/kc.sh start-dev \
            "--http-host=${KC_HOST}" \
            "--http-port=${KC_PORT}" \
            --import-realm \
            "--db-url-properties=${KC_DB_URL_PROPERTIES}" \
            </dev/null >>"${KC_LOG_FILE}" 2>&1
    ) &
    local pid=$!
    printf '%s\n' "${pid}" >"${KC_PID_FILE}"
    log "started pid ${pid}, log ${KC_LOG_FILE}"
    wait_ready
}

wait_ready() {
    local start now code
    start="$(date +%s)"
    while true; do
        if ! is_running; then
            log "server exited before becoming ready; log: ${KC_LOG_FILE}"
            tail -n 40 "${KC_LOG_FILE}" >&2 || true
            rm -f "${KC_PID_FILE}"
            exit 1
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$(ready_url)" || true)"
        now="$(date +%s)"
        if [[ "${code}" == "200" ]]; then
            log "ready after $((now - start)) s at $(base_url)"
            return 0
        fi
        if ((now - start >= KC_READY_TIMEOUT)); then
            log "not ready after ${KC_READY_TIMEOUT} s (last HTTP status ${code}); log: ${KC_LOG_FILE}"
            tail -n 40 "${KC_LOG_FILE}" >&2 || true
            # Do not leave a half-started JVM eating the CPU.
            cmd_stop
            exit 1
        fi
        sleep 1
    done
}

# --- subcommands -----------------------------------------------------------------------

cmd_stop() {
    local pid
    if ! is_running; then
        rm -f "${KC_PID_FILE}"
        log "not running"
        return 0
    fi
    pid="$(read_pid)"
    signal_server TERM || true
    # A SIGSTOPped JVM only acts on SIGTERM once continued.
    signal_server CONT || true
    if ! wait_gone "${pid}" "${KC_STOP_TIMEOUT}"; then
        log "still alive after ${KC_STOP_TIMEOUT} s; sending SIGKILL"
        signal_server KILL || true
        wait_gone "${pid}" 10 || die "pid ${pid} survived SIGKILL"
    fi
    rm -f "${KC_PID_FILE}"
    log "stopped"
}

cmd_kill() {
    local pid
    if ! is_running; then
        rm -f "${KC_PID_FILE}"
        log "not running"
        return 0
    fi
    pid="$(read_pid)"
    signal_server KILL || true
    wait_gone "${pid}" 10 || die "pid ${pid} survived SIGKILL"
    rm -f "${KC_PID_FILE}"
    log "killed pid ${pid}"
}

cmd_pause() {
    is_running || die "not running"
    signal_server STOP
    log "paused pid $(read_pid)"
}

cmd_resume() {
    is_running || die "not running"
    signal_server CONT
    log "resumed pid $(read_pid)"
}

cmd_status() {
    if ! is_running; then
        echo "stopped"
        return 3
    fi
    if is_paused; then
        echo "paused (pid $(read_pid)) $(base_url)"
        return 1
    fi
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$(ready_url)" || true)"
    if [[ "${code}" == "200" ]]; then
        echo "running (pid $(read_pid)) ready $(base_url)"
    else
        echo "running (pid $(read_pid)) not ready (HTTP ${code}) $(base_url)"
    fi
    return 0
}

cmd_logs() {
    [[ -f "${KC_LOG_FILE}" ]] || die "no log yet: ${KC_LOG_FILE}"
    local arg="${1:-100}"
    if [[ "${arg}" == "-f" ]]; then
        tail -n 100 -f "${KC_LOG_FILE}"
    else
        [[ "${arg}" =~ ^[0-9]+$ ]] || die "usage: logs [N|-f]"
        tail -n "${arg}" "${KC_LOG_FILE}"
    fi
}

usage() {
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-}"
    shift || true
    case "${cmd}" in
        fetch) ensure_dist ;;
        start) launch fresh ;;
        restart) launch keep ;;
        stop) cmd_stop ;;
        kill) cmd_kill ;;
        pause) cmd_pause ;;
        resume) cmd_resume ;;
        status) cmd_status ;;
        logs) cmd_logs "$@" ;;
        url) base_url; echo ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
