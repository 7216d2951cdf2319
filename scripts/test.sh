#!/usr/bin/env bash
# Every check weir's CI runs, on a fresh machine: installs what is missing, then
# formatting, clippy (-D warnings), all tests, and a build of the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "tools"
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
cargo build --manifest-path fuzz/Cargo.toml --bins

say "all checks passed"
