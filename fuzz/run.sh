#!/usr/bin/env bash
# Runs every fuzz target: `fuzz/run.sh` runs each 10,000,000 times; `fuzz/run.sh --seconds N` runs
# each for N seconds instead (what CI does). Needs the nightly toolchain and cargo-fuzz, which it
# installs if missing. Prints, per target, the runs done and whether it crashed; exits 1 on a crash
# (the input is kept under fuzz/artifacts/TARGET/). Built without AddressSanitizer (the project
# has no unsafe code; coverage instrumentation stays): about three times as many runs a second.
set -euo pipefail
cd "$(dirname "$0")"
limit=(-runs=10000000)
if [[ "${1:-}" == "--seconds" ]]; then
  limit=(-max_total_time="${2:?--seconds N}")
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); skipping" >&2
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
cargo +nightly fuzz build --sanitizer none 2>&1 | grep -v '^\s*Compiling' || true
failed=0
for target in $(cargo +nightly fuzz list); do
  log="target/fuzz-$target.log"
  mkdir -p target
  if cargo +nightly fuzz run --sanitizer none "$target" -- "${limit[@]}" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "$target: ${runs:-?} runs, no crash"
  else
    failed=1
    echo "$target: CRASHED; see fuzz/$log and fuzz/artifacts/$target/"
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 || true
  fi
done
exit "$failed"
