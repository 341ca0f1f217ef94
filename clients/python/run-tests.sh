#!/usr/bin/env bash
# Runs the Python client's tests against the real service: installs pytest (and
# prometheus_client, for its metrics parser) when missing
# (pip, non-interactive), builds the binary unless KEYCLOAK_RESILIENT_BIN names one, and exits
# non-zero when any test fails or when none ran (pytest's exit 5).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
# pytest 7 or later: the tests rely on its `pythonpath` setting (pyproject.toml).
if ! "$PYTHON" -c 'import sys, pytest; sys.exit(int(pytest.__version__.split(".")[0]) < 7)' 2>/dev/null; then
    echo "run-tests.sh: installing pytest>=7" >&2
    PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$PYTHON" -m pip install --quiet --no-input 'pytest>=7' </dev/null
fi

# prometheus_client: only for its text parser, which checks the `metrics` output (the client
# itself stays standard library only).
if ! "$PYTHON" -c 'import prometheus_client.parser' 2>/dev/null; then
    echo "run-tests.sh: installing prometheus_client" >&2
    PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$PYTHON" -m pip install --quiet --no-input 'prometheus_client>=0.17' </dev/null
fi

if [ -z "${KEYCLOAK_RESILIENT_BIN:-}" ]; then
    repo="$(cd ../.. && pwd)"
    (cd "$repo" && cargo build --quiet --bin keycloak-resilient) </dev/null
    target="${CARGO_TARGET_DIR:-target}"
    case "$target" in /*) ;; *) target="$repo/$target" ;; esac
    export KEYCLOAK_RESILIENT_BIN="$target/debug/keycloak-resilient"
fi

status=0
"$PYTHON" -m pytest -p no:cacheprovider "$@" </dev/null || status=$?
if [ "$status" -eq 5 ]; then
    echo "run-tests.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
