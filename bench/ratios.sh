#!/usr/bin/env bash
# Every ratio the project is held to against the SQLite reference and the argon2 floor, in
# one Markdown table from one run (issue 17 point 5): durable enqueue (1 client, 8 clients,
# batches; into 10 000 and 100 000), the disk a filled queue takes, the drain (batches of 100
# and 1 000), logins during an outage, and the one-shot path. Each bench measures ours and
# its reference side by side in one run (interleaved rounds and medians; the outage bench,
# p99s of local and outage logins); this runs them one after another (release builds, two to
# five minutes on 2 cores) and prints their rows together, then where each bench's own table
# is kept.
#
#   bench/ratios.sh            # all of them
#   bench/ratios.sh drain      # only the benches named
set -euo pipefail
cd "$(dirname "$0")/.."

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(enqueue drain outage_logins one_shot)

out="target/bench-ratios"
mkdir -p "$out"
summary="$out/summary.md"
: >"$summary"
export KR_BENCH_SUMMARY="$PWD/$summary"

started=$(date +%s)
for b in "${benches[@]}"; do
    echo "bench/ratios.sh: running $b" >&2
    if ! cargo bench --quiet --bench "$b" >"$out/$b.md" 2>"$out/$b.log" </dev/null; then
        echo "bench/ratios.sh: $b failed; see $out/$b.log" >&2
        exit 1
    fi
done

echo "| what | measured | goal |"
echo "|---|---|---|"
cat "$summary"
echo
echo "($(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%d), $(( $(date +%s) - started )) s;" \
    "each bench's own table: $out/<bench>.md)"
