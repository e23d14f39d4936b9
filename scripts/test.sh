#!/usr/bin/env bash
# Runs every check and test Fjord has, installing what they need first.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prereqs.sh

echo "==> cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
# The etcd metadata store is a cargo feature (its client's build needs
# protoc); CI checks and tests with it, and checks the default build too.
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo check -p fjord
echo "==> cargo test"
cargo test --workspace --all-targets --all-features
# The simulation's quick set (40 seeds) ran in cargo test; the rest of
# the CI's 1,000 seeds run here (3 and 5 replicas alternating).
echo "==> simulation: seeds 1001-1960"
# (the binary cargo test built, with the features it was built with)
target/debug/sim_bench --seeds 960 --first-seed 1001 --steps 150 \
  > target/sim_bench.json || { cat target/sim_bench.json; exit 1; }
python3 -c 'import json; r = json.load(open("target/sim_bench.json")); print(r["seeds"], "seeds,", r["seeds_with_violations"], "with violations,", r["seeds_per_minute"], "seeds/min")'
# Real processes in network namespaces under kills, pauses, partitions
# and loss: a short subset (scripts/chaos.sh --schedules 50 is the long run).
echo "==> chaos: 2 schedules"
scripts/chaos.sh --schedules 2 --seed 1 > target/chaos.json || { cat target/chaos.json; exit 1; }
python3 -c 'import json; r = json.load(open("target/chaos.json")); print(r["schedules"], "schedules,", r["anomalies"], "anomalies,", r["acked_meetings"], "meetings acknowledged,", sum(r["faults"].values()), "faults")'
echo "==> fuzz targets, 10 s each"
scripts/fuzz.sh --seconds 10 --jobs 2
echo "==> all tests passed"
