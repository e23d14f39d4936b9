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
# The chaos schedules: network namespaces and veth (iproute2), partitions
# and loss (nftables), delay and reordering (iptables' NFQUEUE target).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Helm chart's checks (tests/helm_chart.rs): helm-python-sdk renders and
# lints the chart without a helm binary, kubernetes-validate checks the
# manifests against Kubernetes' schemas, checkov runs policy checks. They go
# into a virtual environment under target/ (pinned versions).
venv=target/tools-venv
tools="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 checkov==3.3.30 PyYAML==6.0.4"
if [ ! -f "$venv/.installed" ] || [ "$(cat "$venv/.installed")" != "$tools" ]; then
  echo "==> installing the chart tools into $venv"
  # Debian's python3 has the venv module but not ensurepip without
  # python3-venv, and a venv made without it has no pip.
  python3 -c 'import ensurepip' >/dev/null 2>&1 || {
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  }
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q $tools
  echo "$tools" > "$venv/.installed"
fi
