#!/usr/bin/env bash
# Builds Fjord's fuzz targets (cargo-fuzz, libFuzzer) and runs each for a
# bounded time or number of executions, starting from the committed seeds
# (fuzz/seeds/TARGET) and the corpus earlier runs grew (fuzz/corpus/TARGET).
# Prints one JSON line per target and a summary; exits 1 if any target
# crashed (the input is kept under fuzz/artifacts/TARGET/).
#
# Usage: scripts/fuzz.sh [--seconds N | --runs N] [--jobs N] [TARGET...]
#   --seconds N   run each target for N seconds (default 10)
#   --runs N      run each target for N executions instead
#   --jobs N      targets run side by side (default 1)
#   TARGET...     default: every target in fuzz/fuzz_targets
# Environment: FJORD_FUZZ_SANITIZER=address builds with AddressSanitizer
# (needs a nightly toolchain); the default, none, builds on stable.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
runs=""
jobs=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

sanitizer="${FJORD_FUZZ_SANITIZER:-none}"
toolchain=()
[ "$sanitizer" != none ] && toolchain=(+nightly)
echo "==> building the fuzz targets (sanitizer: $sanitizer)"
mkdir -p fuzz/target
# One build makes every target (they share the instrumented libraries).
if ! (cd fuzz && cargo "${toolchain[@]}" fuzz build --fuzz-dir . -s "$sanitizer" >../fuzz/target/build.log 2>&1); then
  tail -30 fuzz/target/build.log >&2
  echo "fuzz.sh: the build failed (fuzz/target/build.log)" >&2
  exit 1
fi
bin_dir="fuzz/target/x86_64-unknown-linux-gnu/release"

run_one() {
  local t="$1" log="fuzz/target/$1.log"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local limit=(-max_total_time="$seconds")
  [ -n "$runs" ] && limit=(-runs="$runs")
  local status=0
  "$bin_dir/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" "${limit[@]}" \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  python3 - "$t" "$log" "$status" <<'PY'
import json, re, sys
t, log, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(log, errors="replace").read()
def last(pattern, cast=int):
    found = re.findall(pattern, text)
    return cast(found[-1]) if found else None
out = {
    "target": t,
    "executions": last(r"stat::number_of_executed_units:\s*(\d+)"),
    "executions_per_s": last(r"stat::average_exec_per_sec:\s*(\d+)"),
    "coverage_edges": last(r"\bcov: (\d+)"),
    "features": last(r"\bft: (\d+)"),
    "corpus": last(r"\bcorp: (\d+)"),
    "crashed": status != 0,
}
if status != 0:
    out["artifact"] = last(r"Test unit written to (\S+)", str)
    out["log"] = log
print(json.dumps(out), flush=True)
PY
}
export -f run_one
export seconds runs bin_dir

results="$(printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {})"
echo "$results"
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.startswith("{")]
crashed = [r["target"] for r in rows if r["crashed"]]
print(json.dumps({"targets": len(rows),
                  "executions": sum(r["executions"] or 0 for r in rows),
                  "crashed": crashed}))
sys.exit(1 if crashed else 0)
PY
