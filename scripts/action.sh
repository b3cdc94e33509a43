#!/usr/bin/env bash
# The composite action's logic (action.yml): obtain a deployer binary that was verified, hand
# it exactly the action's inputs, and exec `deployer release`.
#
# Trust rules (README.md, "The action"):
# - Verify, then run exactly what was verified: the binary is placed in a fresh private
#   directory (mktemp -d: 0700, ours, under $RUNNER_TEMP), its sha256 is checked there, and
#   that very file is exec'd after one last check. Nothing runs from a shared or cached path.
# - Where the binary comes from, in order:
#   1. the `binary` input (DEPLOYER_ACTION_BINARY): the workflow's explicit choice, run as given;
#   2. the release asset for this platform named in checksums/release.sha256 of this action's
#      own tree (the release workflow commits it into the commit every release tag points
#      to): downloaded over https only, or copied from the tool cache, and checked against
#      that committed sha256 — a mismatch fails the step, with no fallback;
#   3. only where this tree has no checksum for the platform (a branch pin): `cargo build
#      --release --locked` of this tree, with a notice; the build is cached with its hash
#      recorded, and the hash is checked before a cached build is used.
# - The tool cache ($RUNNER_TOOL_CACHE/deployer) is used only when it and the entry are
#   directories owned by the current user and not group/world-writable, holding regular
#   files of that user; anything else is bypassed (never executed) with a notice.
# - Only the DEPLOYER_* variables action.yml sets reach the binary: every other DEPLOYER_* in
#   the job's environment (e.g. DEPLOYER_REGISTRY_ENDPOINT, DEPLOYER_GITHUB_API_URL) is removed.
# - Every failure fails the step (set -e; no function runs as the left side of `||`/`&&` or
#   inside `if`, where bash would turn set -e off), and writes result=failed and exit-code to
#   the step outputs.
#
# Test overrides (tests only, README.md): a file `test-overrides.env` next to action.yml may
# set `binary=PATH`, `asset-base-url=URL` (which may be file://) and DEPLOYER_* variables for
# the binary, one NAME=VALUE per line. It is read from the action's own tree, which only
# whoever controls this script can write, so nothing in a job's environment can turn it on;
# it is git-ignored, and scripts/release refuses to tag a tree that holds one.
#
# Inputs only ever arrive as environment variables: nothing here is expanded by the workflow
# engine, so no input can become shell code.
set -euo pipefail
# Command substitutions keep set -e too (bash >= 4.4; older bash ignores this and the
# functions below set globals instead of printing, so nothing depends on it).
shopt -s inherit_errexit 2>/dev/null || true
umask 077

action_path=${GITHUB_ACTION_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
action_path=${action_path%/}
my_uid=$(id -u)
private=""

# --- reporting ------------------------------------------------------------------------------

# Workflow-command data: %, CR and LF escaped, so no value can start another command.
escape() {
  local s=$1
  s=${s//'%'/%25}
  s=${s//$'\r'/%0D}
  s=${s//$'\n'/%0A}
  printf '%s' "$s"
}

notice() { printf '::notice title=deployer action::%s\n' "$(escape "$*")"; }
warning() { printf '::warning title=deployer action::%s\n' "$(escape "$*")"; }

reported=no
fail() {
  printf '::error title=deployer action::%s\n' "$(escape "$1")"
  reported=yes
  exit 1
}

# A command that failed under set -e: name it (set -E makes functions inherit this trap).
set -E
on_error() {
  local code=$1 command=$2
  # Only the script itself reports: a command substitution's subshell would print into the
  # variable being assigned.
  if [ "${BASHPID:-}" != "$$" ]; then return 0; fi
  if [ "$reported" = no ]; then
    printf '::error title=deployer action::%s\n' "$(escape "a step failed (exit $code): $command")"
    reported=yes
  fi
}
trap 'on_error "$?" "$BASH_COMMAND"' ERR

# Any exit other than the final exec is a failure before anything changed (exit 1, as
# deployer's own), and says so in the step outputs.
finish() {
  local code=$?
  if [ "$code" != 0 ]; then
    if [ -n "$private" ]; then
      rm -rf -- "$private"
    fi
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
      printf 'result=failed\nexit-code=1\n' >>"$GITHUB_OUTPUT"
    fi
    exit 1
  fi
}
trap finish EXIT

# --- files, owners, hashes ------------------------------------------------------------------

if command -v sha256sum >/dev/null 2>&1; then
  sha256_tool=(sha256sum)
else
  sha256_tool=(shasum -a 256)
fi

# Sets $sum to the sha256 of FILE.
sum=""
hash_file() {
  local out
  out=$("${sha256_tool[@]}" <"$1")
  sum=${out%% *}
}

if stat -c '%u' / >/dev/null 2>&1; then
  stat_format=(stat -c '%u %a')
else
  stat_format=(stat -f '%u %Lp')
fi

# Why the last check below failed, for notices.
unsafe_reason=""

# Whether PATH is a directory (KIND d) or regular file (KIND f), not a symlink, owned by the
# current user, and not writable by group or others.
ours_and_private() {
  local path=$1 kind=$2 info uid mode
  unsafe_reason="is missing"
  if [ -L "$path" ]; then
    unsafe_reason="is a symbolic link"
    return 1
  fi
  if [ "$kind" = d ] && [ ! -d "$path" ]; then return 1; fi
  if [ "$kind" = f ] && [ ! -f "$path" ]; then return 1; fi
  if ! info=$("${stat_format[@]}" "$path" 2>/dev/null); then return 1; fi
  uid=${info%% *}
  mode=${info#* }
  if [ "$uid" != "$my_uid" ]; then
    unsafe_reason="is owned by uid $uid, not by this user ($my_uid)"
    return 1
  fi
  if ! [[ $mode =~ ^[0-7]+$ ]] || (((8#$mode & 8#022) != 0)); then
    unsafe_reason="is writable by group or others (mode $mode)"
    return 1
  fi
}

# Whether a directory others may share (the tool cache, the temp dir) cannot have our
# entries renamed or replaced: owned by us or root, and sticky where others may write.
shared_parent_ok() {
  local path=$1 info uid mode
  unsafe_reason="is not a directory"
  if [ -L "$path" ] || [ ! -d "$path" ]; then return 1; fi
  if ! info=$("${stat_format[@]}" "$path" 2>/dev/null); then return 1; fi
  uid=${info%% *}
  mode=${info#* }
  if [ "$uid" != "$my_uid" ] && [ "$uid" != 0 ]; then
    unsafe_reason="is owned by uid $uid"
    return 1
  fi
  if ! [[ $mode =~ ^[0-7]+$ ]]; then return 1; fi
  if (((8#$mode & 8#022) != 0)) && (((8#$mode & 8#1000) == 0)); then
    unsafe_reason="is writable by others without the sticky bit (mode $mode)"
    return 1
  fi
}

# A cache entry: DIR/deployer and DIR/deployer.sha256 as ours_and_private requires.
cache_entry_ok() {
  local dir=$1
  if ! ours_and_private "$dir" d; then return 1; fi
  if ! ours_and_private "$dir/deployer" f; then return 1; fi
  if ! ours_and_private "$dir/deployer.sha256" f; then return 1; fi
}

# --- the inputs and the environment the binary gets -------------------------------------------

binary_input=${DEPLOYER_ACTION_BINARY:-}
env_lines=${DEPLOYER_ACTION_ENV:-}
secret_lines=${DEPLOYER_ACTION_SECRETS:-}

# Exactly the variables action.yml's `env:` maps inputs to (tests/it/action.rs compares the
# two lists); DEPLOYER_ACTION_* are read above and not passed on.
allowed_vars=(
  DEPLOYER_ENVIRONMENT DEPLOYER_CONFIG DEPLOYER_ROLE_ARN DEPLOYER_CHAIN_ROLE_ARN DEPLOYER_AUDIENCE
  DEPLOYER_REGION DEPLOYER_ALLOWED_ACCOUNT_IDS DEPLOYER_SOURCE DEPLOYER_FROM DEPLOYER_FROM_REGISTRY
  DEPLOYER_REPOSITORY DEPLOYER_TAGS DEPLOYER_CREATE_REPOSITORY DEPLOYER_IMAGES
  DEPLOYER_TASK_DEFINITION DEPLOYER_CONTAINER DEPLOYER_SECRETS_PATH DEPLOYER_CLUSTER
  DEPLOYER_SERVICE DEPLOYER_STRATEGY DEPLOYER_HEALTH_URL DEPLOYER_TEST_URL DEPLOYER_BAKE
  DEPLOYER_TIMEOUT DEPLOYER_NO_ROLLBACK DEPLOYER_PERMISSIONS DEPLOYER_PIN_SECRETS
  DEPLOYER_ALLOW_UNKNOWN_FIELDS DEPLOYER_UPDATE_SCHEDULED_TASKS DEPLOYER_KEEP_REVISIONS
  DEPLOYER_RESOURCE_TAGS DEPLOYER_ENVIRONMENT_URL DEPLOYER_GITHUB_TOKEN
)

is_allowed() {
  local name=$1 a
  for a in "${allowed_vars[@]}"; do
    if [ "$a" = "$name" ]; then return 0; fi
  done
  return 1
}

dropped=()
while IFS= read -r name; do
  if [[ $name != DEPLOYER_* ]]; then continue; fi
  if is_allowed "$name"; then
    # An empty input means "not given": drop it so deployer.toml and the defaults apply.
    if [ -z "${!name}" ]; then unset "$name"; fi
  else
    case $name in
      DEPLOYER_ACTION_BINARY | DEPLOYER_ACTION_ENV | DEPLOYER_ACTION_SECRETS) ;;
      *) dropped+=("$name") ;;
    esac
    unset "$name"
  fi
done < <(compgen -e)
if [ ${#dropped[@]} -gt 0 ]; then
  notice "ignoring ${dropped[*]} from the job's environment: only the action's inputs reach deployer"
fi

# --- test overrides (see the header) ----------------------------------------------------------

test_binary=""
test_asset_base=""
overrides=$action_path/test-overrides.env
if [ -f "$overrides" ]; then
  warning "test overrides from $overrides are active (a test setup; a release never holds this file)"
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    name=${line%%=*}
    value=${line#*=}
    if [ "$name" = "$line" ]; then fail "$overrides: expected NAME=VALUE, got '$line'"; fi
    case $name in
      binary) test_binary=$value ;;
      asset-base-url) test_asset_base=$value ;;
      DEPLOYER_*)
        if ! [[ $name =~ ^DEPLOYER_[A-Z0-9_]+$ ]]; then fail "$overrides: bad variable name '$name'"; fi
        export "$name=$value"
        ;;
      *) fail "$overrides: unknown key '$name' (binary, asset-base-url or DEPLOYER_*)" ;;
    esac
  done <"$overrides"
fi

# --- the binary -------------------------------------------------------------------------------

target_triple() {
  local os=${RUNNER_OS:-$(uname -s)} arch=${RUNNER_ARCH:-$(uname -m)}
  case "$os/$arch" in
    Linux/X64 | Linux/x86_64) echo x86_64-unknown-linux-musl ;;
    Linux/ARM64 | Linux/aarch64) echo aarch64-unknown-linux-musl ;;
    macOS/ARM64 | Darwin/arm64) echo aarch64-apple-darwin ;;
    *) echo unsupported ;;
  esac
}

# A fresh directory only this user can enter; the binary that runs is put here.
make_private_dir() {
  local parent=${RUNNER_TEMP:-${TMPDIR:-/tmp}}
  parent=${parent%/}
  if ! shared_parent_ok "$parent"; then
    fail "the temporary directory $parent $unsafe_reason; refusing to place the binary there"
  fi
  local dir
  dir=$(mktemp -d "$parent/deployer-bin.XXXXXXXX")
  private=$dir
  if ! ours_and_private "$private" d; then
    fail "mktemp gave $private, which $unsafe_reason"
  fi
}

# $RUNNER_TOOL_CACHE/deployer when it is safe to use; empty otherwise (everything then lives
# in the private directory only).
cache_root=""
setup_cache() {
  local tool_cache=${RUNNER_TOOL_CACHE:-}
  tool_cache=${tool_cache%/}
  if [ -z "$tool_cache" ]; then return 0; fi
  if ! shared_parent_ok "$tool_cache"; then
    notice "not using the tool cache: $tool_cache $unsafe_reason"
    return 0
  fi
  local root=$tool_cache/deployer
  if [ ! -e "$root" ] && [ ! -L "$root" ]; then
    # Someone may create it first; the check below decides either way.
    if ! mkdir -m 0700 -- "$root" 2>/dev/null; then :; fi
  fi
  if ours_and_private "$root" d; then
    cache_root=$root
  else
    notice "not using the tool cache: $root $unsafe_reason"
  fi
}

# Copy DIR's cached binary into the private directory when the entry is safe and the copy's
# hash is WANT (or, for WANT=recorded, the hash recorded in the entry). Sets exe/expected
# on success; leaves them empty otherwise.
from_cache() {
  local dir=$1 want=$2 copy actual
  if [ -z "$cache_root" ]; then return 0; fi
  if [ ! -e "$dir" ] && [ ! -L "$dir" ]; then return 0; fi
  if ! cache_entry_ok "$dir"; then
    notice "not using the cached binary in $dir: it $unsafe_reason"
    return 0
  fi
  if [ "$want" = recorded ]; then
    want=$(head -c 64 "$dir/deployer.sha256")
    if ! [[ $want =~ ^[0-9a-f]{64}$ ]]; then
      notice "not using the cached binary in $dir: its recorded sha256 is malformed"
      return 0
    fi
  fi
  copy=$private/deployer
  cp -- "$dir/deployer" "$copy"
  hash_file "$copy"
  actual=$sum
  if [ "$actual" != "$want" ]; then
    rm -f -- "$copy"
    warning "the cached binary in $dir does not match its sha256 ($actual, want $want); not using it"
    return 0
  fi
  exe=$copy
  expected=$want
}

# Record a verified binary in the tool cache: DIR/deployer and DIR/deployer.sha256, each
# written aside and renamed into place.
store_in_cache() {
  local dir=$1 file=$2 sum=$3
  if [ -z "$cache_root" ]; then return 0; fi
  if [ -e "$dir" ] || [ -L "$dir" ]; then
    if ! ours_and_private "$dir" d; then
      notice "not caching the binary in $dir: it $unsafe_reason"
      return 0
    fi
  else
    mkdir -m 0700 -- "$dir"
  fi
  cp -- "$file" "$dir/.deployer.$$"
  chmod 0700 "$dir/.deployer.$$"
  mv -f -- "$dir/.deployer.$$" "$dir/deployer"
  printf '%s\n' "$sum" >"$dir/.deployer.sha256.$$"
  mv -f -- "$dir/.deployer.sha256.$$" "$dir/deployer.sha256"
}

# The release asset ASSET whose sha256 EXPECTED this tree's checksums name.
from_release() {
  local asset=$1 want=$2 base protos download actual
  base=$(sed -n 's/^# release: *//p' "$checksums_file" | sed -n 1p)
  protos='=https'
  if [ -n "$test_asset_base" ]; then
    base=$test_asset_base
    protos='=https,file'
  fi
  case $base in
    https://*) ;;
    file://*)
      if [ -z "$test_asset_base" ]; then fail "$checksums_file: the release URL must be https, not $base"; fi
      ;;
    '') fail "$checksums_file names no release URL (a '# release: https://…' line)" ;;
    *) fail "$checksums_file: the release URL must be https, not $base" ;;
  esac
  from_cache "$cache_root/release-$want" "$want"
  if [ -n "$exe" ]; then return 0; fi
  download=$private/deployer.download
  echo "deployer: downloading $asset from $base" >&2
  curl -fsSL --retry 3 --connect-timeout 20 --proto "$protos" --proto-redir "$protos" -o "$download" "$base/$asset"
  hash_file "$download"
  actual=$sum
  if [ "$actual" != "$want" ]; then
    rm -f -- "$download"
    fail "checksum mismatch for $asset: expected $want (checksums/release.sha256), got $actual; refusing to run it"
  fi
  mv -- "$download" "$private/deployer"
  chmod 0700 "$private/deployer"
  exe=$private/deployer
  expected=$want
  store_in_cache "$cache_root/release-$want" "$exe" "$want"
}

# Sets $src_hash to a hash of the source the build would compile (file names and contents).
src_hash=""
hash_source() {
  local parts=() p sums out
  for p in Cargo.toml Cargo.lock build.rs src sim; do
    if [ -e "$action_path/$p" ]; then parts+=("$p"); fi
  done
  if [ ${#parts[@]} = 0 ]; then fail "$action_path holds no deployer source (Cargo.toml, src/)"; fi
  sums=$(cd "$action_path" && find "${parts[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 "${sha256_tool[@]}")
  out=$(printf '%s\n' "$sums" | "${sha256_tool[@]}")
  src_hash=${out:0:32}
}

from_source() {
  local hash target_dir built
  notice "this action's tree has no release checksum for $1 (a branch pin, not a release): building deployer from source with cargo build --release --locked. Pin a release tag or its commit to run the verified release binary instead."
  hash_source
  hash=$src_hash
  from_cache "$cache_root/source-$hash" recorded
  if [ -n "$exe" ]; then
    echo "deployer: using the cached source build $cache_root/source-$hash (sha256 $expected)" >&2
    return 0
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    fail "no deployer binary: no release checksum for $1 in this action's tree and no cargo to build one"
  fi
  target_dir=$private/target
  if [ -n "$cache_root" ]; then
    if [ ! -e "$cache_root/target" ] && [ ! -L "$cache_root/target" ]; then
      mkdir -m 0700 -- "$cache_root/target"
    fi
    if ours_and_private "$cache_root/target" d; then
      target_dir=$cache_root/target
    else
      notice "not reusing the build directory $cache_root/target: it $unsafe_reason"
    fi
  fi
  echo "::group::cargo build --release --locked (deployer)"
  (cd "$action_path" && CARGO_TARGET_DIR=$target_dir cargo build --release --locked -p deployer --bin deployer >&2)
  echo "::endgroup::"
  built=$target_dir/release/deployer
  if ! ours_and_private "$built" f; then fail "the build left no usable binary at $built: it $unsafe_reason"; fi
  cp -- "$built" "$private/deployer"
  exe=$private/deployer
  hash_file "$exe"
  expected=$sum
  store_in_cache "$cache_root/source-$hash" "$exe" "$expected"
}

exe=""
expected=""
checksums_file=$action_path/checksums/release.sha256
binary=${binary_input:-$test_binary}
if [ -n "$binary" ]; then
  if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then fail "binary $binary is not an executable file"; fi
  exe=$binary
else
  make_private_dir
  setup_cache
  asset="deployer-$(target_triple)"
  want=""
  if [ -f "$checksums_file" ]; then
    want=$(awk -v a="$asset" '$2 == a || $2 == "*" a { print $1 }' "$checksums_file")
    if [[ $want == *$'\n'* ]]; then fail "$checksums_file names $asset more than once"; fi
    if [ -n "$want" ] && ! [[ $want =~ ^[0-9a-f]{64}$ ]]; then fail "$checksums_file: the sha256 of $asset is malformed"; fi
  fi
  if [ -n "$want" ]; then
    from_release "$asset" "$want"
  else
    from_source "$asset"
  fi
fi

# --- the arguments, one last check, exec ------------------------------------------------------

# Repeatable flags without an environment fallback: one per non-empty line, never re-parsed
# by a shell.
args=(release)
while IFS= read -r line; do
  if [ -n "${line//[[:space:]]/}" ]; then args+=(--env "$line"); fi
done <<<"$env_lines"
while IFS= read -r line; do
  if [ -n "${line//[[:space:]]/}" ]; then args+=(--secret "$line"); fi
done <<<"$secret_lines"

if [ -n "$expected" ]; then
  # The file in our private directory, hashed once more right before it runs.
  hash_file "$exe"
  if [ "$sum" != "$expected" ]; then fail "$exe changed after it was verified ($sum, want $expected)"; fi
fi
exec "$exe" "${args[@]}"
