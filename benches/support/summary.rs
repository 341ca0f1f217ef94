//! The rows a bench adds to `bench/ratios.sh`'s one table: when `KR_BENCH_SUMMARY` names a
//! file, each ratio a bench measures is appended to it as a Markdown row (what, the ratio, the
//! goal it is held to); without it, nothing is written and the bench prints only its own table.

use std::io::Write;

/// Appends `| what | value | goal |` to `$KR_BENCH_SUMMARY`, when it is set.
pub fn row(what: &str, value: &str, goal: &str) {
    let Ok(path) = std::env::var("KR_BENCH_SUMMARY") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("KR_BENCH_SUMMARY={path}: {e}"));
    writeln!(file, "| {what} | {value} | {goal} |")
        .unwrap_or_else(|e| panic!("KR_BENCH_SUMMARY={path}: {e}"));
}
