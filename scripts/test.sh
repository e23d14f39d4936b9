#!/usr/bin/env bash
# Runs every check and test Fjord has, installing what they need first.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prereqs.sh

echo "==> cargo fmt --check"
cargo fmt --all --check
# The etcd metadata store is a cargo feature (its client's build needs
# protoc); CI checks and tests with it, and checks the default build too.
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo check -p fjord
echo "==> cargo test"
cargo test --workspace --all-targets --all-features
echo "==> all tests passed"
