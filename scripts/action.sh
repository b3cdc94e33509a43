#!/usr/bin/env bash
# The composite action's logic (action.yml): get a deployer binary, turn the inputs that
# action.yml put into the environment into `deployer release` arguments, and run it.
#
# The binary, in order:
#   1. the `binary` input (DEPLOYER_ACTION_BINARY), else $DEPLOYER_BINARY from the job;
#   2. the release asset for this runner's platform named in $GITHUB_ACTION_PATH/checksums/
#      release.sha256, downloaded and checked against the sha256 committed there; a mismatch
#      fails closed (the download is deleted, never run);
#   3. `cargo build --release --locked` of the action's own source, cached in the runner's
#      tool cache under a hash of that source.
#
# Inputs only ever arrive as environment variables: nothing here is expanded by the workflow
# engine, so no input can become shell code.
set -euo pipefail

action_path=${GITHUB_ACTION_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
action_path=${action_path%/}

die() {
  printf '::error::%s\n' "$*"
  exit 1
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

target_triple() {
  local os=${RUNNER_OS:-$(uname -s)} arch=${RUNNER_ARCH:-$(uname -m)}
  case "$os/$arch" in
    Linux/X64 | Linux/x86_64) echo x86_64-unknown-linux-musl ;;
    Linux/ARM64 | Linux/aarch64) echo aarch64-unknown-linux-musl ;;
    macOS/ARM64 | Darwin/arm64) echo aarch64-apple-darwin ;;
    *) echo unsupported ;;
  esac
}

tool_cache() {
  echo "${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}}/deployer"
}

# checksums/release.sha256: `# release: BASE-URL` then `HEX  ASSET` lines (sha256sum format).
# Sets $bin; returns 1 when the file names no asset for this platform.
from_release() {
  local list=$action_path/checksums/release.sha256 target asset expected base dir file actual
  [ -f "$list" ] || return 1
  target=$(target_triple)
  asset="deployer-$target"
  expected=$(awk -v a="$asset" '$2 == a || $2 == "*" a { print $1 }' "$list")
  [ -n "$expected" ] || return 1
  [[ $expected =~ ^[0-9a-f]{64}$ ]] || die "$list: the sha256 of $asset is malformed"
  base=${DEPLOYER_ACTION_ASSET_BASE_URL:-$(sed -n 's/^# release: *//p' "$list" | head -n 1)}
  [ -n "$base" ] || die "$list names no release URL (# release: ...)"
  dir="$(tool_cache)/release-$expected"
  file="$dir/deployer"
  if [ -x "$file" ] && [ "$(sha256_of "$file")" = "$expected" ]; then
    bin=$file
    return 0
  fi
  mkdir -p "$dir"
  echo "deployer: downloading $asset from $base" >&2
  curl -fsSL --retry 3 --proto '=https,http,file' -o "$file.download" "$base/$asset" ||
    die "cannot download $base/$asset"
  actual=$(sha256_of "$file.download")
  if [ "$actual" != "$expected" ]; then
    rm -f "$file.download"
    die "checksum mismatch for $asset: expected $expected (checksums/release.sha256), got $actual; refusing to run it"
  fi
  mv "$file.download" "$file"
  chmod +x "$file"
  bin=$file
}

# Sets $bin.
from_source() {
  command -v cargo >/dev/null 2>&1 || die "no deployer binary: no release asset for $(target_triple) and no cargo to build one"
  local hash dir
  hash=$(cd "$action_path" && find Cargo.toml Cargo.lock src sim -type f -print0 | LC_ALL=C sort -z | xargs -0 cat | sha256sum | cut -c1-16)
  dir="$(tool_cache)/source-$hash"
  if [ ! -x "$dir/deployer" ]; then
    echo "deployer: building from source (cargo build --release --locked), cached in $dir" >&2
    (cd "$action_path" && CARGO_TARGET_DIR="$(tool_cache)/target" cargo build --release --locked -p deployer --bin deployer >&2)
    mkdir -p "$dir"
    cp "$(tool_cache)/target/release/deployer" "$dir/deployer"
  fi
  bin=$dir/deployer
}

bin=${DEPLOYER_ACTION_BINARY:-${DEPLOYER_BINARY:-}}
if [ -n "$bin" ]; then
  [ -x "$bin" ] || die "binary $bin is not an executable file"
else
  # from_release returns 1 only when there is no asset for this platform; a failed download
  # or a checksum mismatch exits right there (fail closed, no fallback to a source build).
  from_release || from_source
fi
unset DEPLOYER_ACTION_BINARY DEPLOYER_BINARY

# Repeatable flags without an environment fallback: one per non-empty line.
args=(release)
while IFS= read -r line; do
  [ -n "${line//[[:space:]]/}" ] && args+=(--env "$line")
done <<<"${DEPLOYER_ACTION_ENV:-}"
while IFS= read -r line; do
  [ -n "${line//[[:space:]]/}" ] && args+=(--secret "$line")
done <<<"${DEPLOYER_ACTION_SECRETS:-}"
unset DEPLOYER_ACTION_ENV DEPLOYER_ACTION_SECRETS

# An empty input means "not given": drop it so deployer.toml and the defaults apply.
while IFS= read -r name; do
  [ -z "${!name}" ] && unset "$name"
done < <(compgen -e | grep '^DEPLOYER_' || true)

exec "$bin" "${args[@]}"
