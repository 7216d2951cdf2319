#!/usr/bin/env bash
# The fuzz campaign on the stable toolchain: `scripts/fuzz.sh [SECONDS] [TARGET...]`.
#
# cargo-fuzz needs nightly only for its sanitizers; libFuzzer itself (libfuzzer-sys, built
# with this machine's g++) and the coverage instrumentation it feeds on are stable rustc
# flags (`-C passes=sancov-module` plus LLVM's sanitizer-coverage options, what cargo-fuzz
# passes with `--sanitizer none`). So the targets build here as they would under cargo-fuzz,
# minus AddressSanitizer: Rust's own bounds and overflow checks (debug assertions and
# overflow checks are on) stand in for it. Each target runs for SECONDS (default 60) on a
# working corpus seeded from the checked-in `fuzz/corpus/<target>`; crashes land in
# `fuzz/artifacts/<target>/`. A line per target says how many inputs ran and at what rate.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(event_parse json_scanner value_language mapping_rules flow_load stream_entry pixel_query)
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "== building the instrumented targets (release, $host)"
cargo build --release --locked --bins --target "$host" --target-dir target-instrumented
bin="target-instrumented/$host/release"

summary=()
for target in "${targets[@]}"; do
  work="work/$target"
  mkdir -p "$work" "artifacts/$target"
  echo "== $target: ${seconds}s"
  log="$(mktemp)"
  status=0
  # -rss_limit_mb: a flow file may build a QuickJS runtime; 2 GB is libFuzzer's default.
  "$bin/$target" "$work" "corpus/$target" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  found="$(find "artifacts/$target" -type f | wc -l)"
  line="$target: ${runs:-?} runs, ${rate:-?}/s, corpus $(find "$work" -type f | wc -l) inputs, $found crash files, exit $status"
  echo "$line"
  summary+=("$line")
  if ((status != 0)); then
    tail -40 "$log"
  fi
  rm -f "$log"
done
echo "== summary ($seconds s per target)"
printf '%s\n' "${summary[@]}"
