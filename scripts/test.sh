#!/usr/bin/env bash
# Every check weir's CI runs, on a fresh machine: installs what is missing, then
# formatting, clippy (-D warnings), all tests, cargo deny (bans, licenses, sources), and a
# build of the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "tools"
# Debian packages beyond the Rust toolchain: C and C++ compilers (mimalloc, ring, libFuzzer)
# and the real servers the tests start on loopback ports (redis-server, redis-cli), and the
# headless browser the SSE test opens an EventSource in (chromium), and the TLS terminator the
# Kafka TLS test puts in front of the broker (stunnel4).
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v stunnel >/dev/null 2>&1 || missing+=(stunnel4)
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  # The package starts a system-wide redis-server; the tests start their own.
  if command -v systemctl >/dev/null 2>&1; then $sudo systemctl stop redis-server 2>/dev/null || true; fi
  $sudo service redis-server stop >/dev/null 2>&1 || true
fi
# The Kafka-protocol broker the Kafka tests start (tansu, built from crates.io once into a
# cache: about 25 minutes on 2 cores, 35 with another build alongside; a whole first run on a
# fresh machine, packages and weir's own build included, takes about 47 minutes) and the second, independent Kafka client they check weir's records with
# (Python's confluent-kafka, in a virtualenv in the same cache). Reused while versions match.
TANSU_VERSION=0.6.0
CONFLUENT_KAFKA_VERSION=2.16.1
tools="${WEIR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/weir-tools}"
export WEIR_TANSU="$tools/tansu-$TANSU_VERSION/bin/tansu"
if ! "$WEIR_TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "installing tansu $TANSU_VERSION into $tools (once; about 25 minutes on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
    --root "$tools/tansu-$TANSU_VERSION" --quiet
fi
export WEIR_PYTHON="$tools/python-kafka/bin/python"
if ! "$WEIR_PYTHON" -c "import confluent_kafka, sys; sys.exit(confluent_kafka.__version__ != '$CONFLUENT_KAFKA_VERSION')" 2>/dev/null; then
  python3 -m venv "$tools/python-kafka"
  "$WEIR_PYTHON" -m pip install --quiet --disable-pip-version-check "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
fi
# cargo-deny: the licenses, sources and bans check (built from crates.io once, into the cache:
# about 2.5 minutes on 2 cores).
CARGO_DENY_VERSION=0.20.2
export WEIR_CARGO_DENY="$tools/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny"
if ! "$WEIR_CARGO_DENY" --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION into $tools (once)"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked \
    --root "$tools/cargo-deny-$CARGO_DENY_VERSION" --quiet
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

say "cargo test"
cargo test --all-targets --locked

say "cargo deny check bans licenses sources"
"$WEIR_CARGO_DENY" --frozen check bans licenses sources

say "fuzz targets build, and each run over its checked-in corpus (scripts/fuzz.sh fuzzes)"
cargo build --manifest-path fuzz/Cargo.toml --bins --locked
for corpus in fuzz/corpus/*/; do
  target="$(basename "$corpus")"
  if ! fuzz/target/debug/"$target" "$corpus"* >/tmp/weir-fuzz-regression.log 2>&1; then
    tail -40 /tmp/weir-fuzz-regression.log
    echo "fuzz target $target fails on an input of $corpus"
    exit 1
  fi
  echo "$target: $(find "$corpus" -type f | wc -l) inputs ok"
done

say "all checks passed"
