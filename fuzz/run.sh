#!/usr/bin/env bash
# Runs the fuzz targets: `fuzz/run.sh` runs each 10,000,000 times; `fuzz/run.sh --seconds N` runs
# each for N seconds instead (what CI does); names after the options run only those targets. Needs the nightly toolchain and cargo-fuzz, which it
# installs if missing. Prints, per target, the runs done and whether it crashed; exits 1 on a crash
# (the input is kept under fuzz/artifacts/TARGET/). Built without AddressSanitizer (the project
# has no unsafe code; coverage instrumentation stays): about three times as many runs a second.
set -euo pipefail
cd "$(dirname "$0")"
limit=(-runs=10000000)
if [[ "${1:-}" == "--seconds" ]]; then
  limit=(-max_total_time="${2:?--seconds N}")
  shift 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); skipping" >&2
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
cargo +nightly fuzz build --sanitizer none
bin="target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
mkdir -p target
failed=0
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
  log="target/fuzz-$target.log"
  mkdir -p "corpus/$target" "artifacts/$target"
  # The built binary itself, so that nothing is rebuilt while the targets run.
  extra=()
  # A run of the scheduler target replays a swarm's inputs; short inputs (a few messages each)
  # keep it near 1,500 runs a second.
  [[ "$target" == scheduler_messages ]] && extra=(-max_len=128)
  if "$bin/$target" "${limit[@]}" "${extra[@]}" -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" "corpus/$target" >"$log" 2>&1; then
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "$target: ${runs:-?} runs, no crash"
  else
    failed=1
    echo "$target: CRASHED; see fuzz/$log and fuzz/artifacts/$target/"
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 || true
  fi
done
exit "$failed"
