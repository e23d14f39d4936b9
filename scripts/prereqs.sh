#!/usr/bin/env bash
# Installs from Debian what the tests and benchmarks need beyond Rust:
# protoc and descriptor.proto (the etcd client's build compiles etcd's
# protos with them), etcd itself (the benchmarks compare against it, and
# tests that need etcd run a real one), Python's pandas, promtool (from
# the prometheus package: the SLO rules are checked and unit-tested with
# it) and Chromium (the SLA dashboard is loaded in headless Chromium).
# Does nothing when all are there.
# Usage: scripts/prereqs.sh
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
# The billing export test reads the CSV with Python's csv module and with
# pandas (a spreadsheet-style reader), both from Debian's Python.
/usr/bin/python3 -c 'import pandas' >/dev/null 2>&1 || need+=(python3-pandas)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
