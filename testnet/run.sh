#!/usr/bin/env bash
# Runs a local taskswarm testnet: builds in release mode, starts N peers (default 4) on
# 127.0.0.1, submits a demo workload to peer 1 and prints where each task ran.
#
#   testnet/run.sh              start, run the demo, leave the peers running
#   testnet/run.sh --once       run the demo and stop every peer (exit 0 only if all went well)
#   testnet/run.sh --peers 6    more peers (see --help for every option)
#   testnet/run.sh stop         stop the peers of the last testnet left running
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p taskswarm -p taskswarm-testnet
export TASKSWARM_BIN="$PWD/target/release/taskswarm"
exec target/release/taskswarm-testnet "$@"
