#!/usr/bin/env bash
# Every check weir's CI runs, on a fresh machine: installs what is missing, then
# formatting, clippy (-D warnings), all tests, and a build of the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "tools"
# Debian packages the build needs beyond the Rust toolchain: C and C++ compilers for
# mimalloc and libFuzzer (fuzz targets). Later issues add redis-server and the broker here.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
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

say "fuzz targets build"
cargo build --manifest-path fuzz/Cargo.toml --bins --locked

say "all checks passed"
