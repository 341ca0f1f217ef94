#!/usr/bin/env bash
# Run the live-Keycloak suite (tests/live.rs) against a real Keycloak started for the run.
#
#   scripts/live-tests.sh [extra cargo test filter args...]
#
# 1. installs what is missing (only when `command -v` fails, non-interactive, no stdin):
#    Java 17 (openjdk-17-jre-headless), Maven, unzip, curl — via apt-get, as root or with
#    passwordless sudo;
# 2. builds the test binary (before Keycloak starts: the machine may have only 2 cores);
# 3. fetches and unpacks Keycloak (scripts/keycloak.sh fetch), starts it fresh with the realm
#    fixture (scripts/keycloak.sh start);
# 4. runs `cargo test --test live -- --test-threads=1 --nocapture` with KEYCLOAK_TEST_URL set
#    and KEYCLOAK_LIVE_REQUIRED=1 (so a test that would skip fails instead);
# 5. ALWAYS stops Keycloak (trap EXIT) and exits with the tests' exit code; on failure prints
#    the last 60 lines of the Keycloak log. Timings (install/build/download/start/tests) and a
#    per-test summary are printed at the end.
#
# Environment: KC_PORT (default 18080) and the rest of scripts/keycloak.sh's settings.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd -- "${SCRIPT_DIR}/.." && pwd)"
KC="${SCRIPT_DIR}/keycloak.sh"
cd "${REPO_DIR}"

export DEBIAN_FRONTEND=noninteractive
exec </dev/null

log() { printf '\n=== live-tests: %s\n' "$*" >&2; }
die() { printf 'live-tests: %s\n' "$*" >&2; exit 1; }

# --- timings -------------------------------------------------------------------------------

declare -a TIMINGS=()
RUN_START="$(date +%s)"
STEP_START=0
step_begin() { STEP_START="$(date +%s)"; log "$1"; }
step_end() { TIMINGS+=("$(printf '%-10s %4d s' "$1" "$(($(date +%s) - STEP_START))")"); }

# Called from the EXIT trap (shellcheck cannot see that):
# shellcheck disable=SC2317
print_timings() {
    local t
    printf '\n=== live-tests: timings\n' >&2
    for t in "${TIMINGS[@]}"; do
        printf '  %s\n' "${t}" >&2
    done
    printf '  %-10s %4d s\n' "total" "$(($(date +%s) - RUN_START))" >&2
}

# --- stop Keycloak whatever happens ----------------------------------------------------------

TEST_LOG="$(mktemp)"
KC_STARTED=0
TESTS_RC=""

# shellcheck disable=SC2317
on_exit() {
    local rc=$?
    # The tests' exit code wins over whatever failed later (e.g. the stop).
    if [[ -n "${TESTS_RC}" ]]; then
        rc="${TESTS_RC}"
    fi
    if ((KC_STARTED)); then
        if ((rc != 0)); then
            printf '\n=== live-tests: last 60 lines of the Keycloak log\n' >&2
            "${KC}" logs 60 >&2 || true
        fi
        log "stopping Keycloak"
        "${KC}" stop || true
    fi
    if ((${#TIMINGS[@]})); then
        print_timings
    fi
    rm -f "${TEST_LOG}"
    if ((rc == 0)); then
        log "PASSED"
    else
        log "FAILED (exit ${rc})"
    fi
    exit "${rc}"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- prerequisites -------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: $*"
        sudo=(sudo -n)
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: $*"
    if ((!APT_UPDATED)); then
        "${sudo[@]}" apt-get update -q
        APT_UPDATED=1
    fi
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@"
}

java_major() {
    # `openjdk version "17.0.15" 2025-04-15` -> 17; `java version "1.8.0_412"` -> 8
    local v
    v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)"
    v="${v#1.}"
    printf '%s' "${v%%[.+_-]*}"
}

have_java17() {
    local j
    for j in /usr/lib/jvm/java-17-openjdk-*/bin/java; do
        [[ -x "${j}" ]] && return 0
    done
    if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
        j="${JAVA_HOME}/bin/java"
    elif command -v java >/dev/null 2>&1; then
        j="$(command -v java)"
    else
        return 1
    fi
    local major
    major="$(java_major "${j}")"
    [[ "${major}" =~ ^[0-9]+$ ]] && ((major >= 17))
}

step_begin "prerequisites"
missing=()
if ! command -v java >/dev/null 2>&1 || ! have_java17; then
    missing+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v cargo >/dev/null 2>&1 || die "cargo not found"
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt_install "${missing[@]}"
else
    printf 'java, mvn, unzip, curl: present\n' >&2
fi
have_java17 || die "no Java 17 or newer after installing openjdk-17-jre-headless"
step_end "install"

# --- build first, so compiling does not compete with Keycloak's start ------------------------

step_begin "building the live test binary"
cargo test --test live --no-run
step_end "build"

# --- Keycloak ------------------------------------------------------------------------------

step_begin "fetching Keycloak (Maven Central, cached in ~/.m2)"
"${KC}" fetch
step_end "download"

step_begin "starting Keycloak"
KC_STARTED=1
"${KC}" start
step_end "start"

URL="$("${KC}" url)"

# --- the tests -----------------------------------------------------------------------------

step_begin "running tests/live.rs against ${URL}"
set +e
KEYCLOAK_TEST_URL="${URL}" KEYCLOAK_LIVE_REQUIRED=1 \
    cargo test --test live -- --test-threads=1 --nocapture "$@" 2>&1 | tee "${TEST_LOG}"
TESTS_RC="${PIPESTATUS[0]}"
set -e
step_end "tests"

printf '\n=== live-tests: per-test results\n' >&2
# cargo prints `test name ... ` without a newline, so these lines may start mid-line.
grep -oE 'LIVE-RESULT .*' "${TEST_LOG}" | sed 's/^LIVE-RESULT /  /' >&2 || true
if grep -qE 'SKIPPED [A-Za-z0-9_]+: KEYCLOAK_TEST_URL' "${TEST_LOG}"; then
    printf 'live-tests: some tests were SKIPPED although KEYCLOAK_TEST_URL was set\n' >&2
    if [[ "${TESTS_RC}" == "0" ]]; then
        TESTS_RC=1
    fi
fi
if [[ "${TESTS_RC}" == "0" && $# -eq 0 ]] && ! grep -q 'LIVE-RESULT ok ' "${TEST_LOG}"; then
    printf 'live-tests: no live test ran\n' >&2
    TESTS_RC=1
fi
exit "${TESTS_RC}"
