#!/usr/bin/env bash
# Real-process chaos: seeded schedules of kills, pauses, partitions,
# packet loss and packet delay with reordering against three control-plane replicas and four media nodes,
# each in a network namespace of its own, with participants in meetings;
# then the checks (acknowledged meetings present and inside residency,
# participants in their meetings or ended with a reason, the ledger
# against the participants, no process died unkilled). Prints a JSON
# summary on stdout and progress on stderr; exits 1 on any anomaly.
#
# Usage: scripts/chaos.sh [--schedules N] [--seed S] [--fault-seconds N]
#                         [--keep DIR]
# Needs root (namespaces), nft and iptables (its NFQUEUE target hands
# packets to the delay); scripts/prereqs.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "chaos.sh: needs root to create network namespaces" >&2
  exit 2
fi
{ command -v nft && command -v iptables; } >/dev/null 2>&1 || scripts/prereqs.sh
# The same build as the tests' (no rebuild after scripts/test.sh).
cargo build --quiet --workspace --all-targets --all-features
exec target/debug/chaos --fjord target/debug/fjord "$@"
