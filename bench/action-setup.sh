#!/usr/bin/env bash
# Action set-up benchmark: how long the composite action's step takes under act (host mode)
# when the binary is
#   direct    the `binary` input: nothing downloaded or verified (the peer: what the action
#             costs with no trust checks at all);
#   release   the checksum-verified release asset (file:// through the test override), first
#             run: copy from the "release", sha256, private directory, tool-cache entry;
#   cached    the same asset again, from the tool cache: copied into a fresh private
#             directory and verified twice;
#   source    a branch pin with a warm source-build cache: hash of the action's source, cached
#             build verified against its recorded hash.
# Each step runs the real deployer, which refuses at once (no deployer.toml), so the step's
# time is the set-up plus a refusal of a few ms. act's own step timing ("Main org/deployer@…
# [1.2s]") is the measure; the median of BENCH_RUNS (default 5) runs per case is printed, and
# each case's ratio to `direct`.
#
# The binary is target/release/deployer when it exists (what a release ships, stripped), else
# the debug build (larger, so slower to hash and copy: an upper bound). The warm source cache
# is made by one run with a stub `cargo` that copies that binary (a real cold build takes
# minutes and is not what is measured).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deployer-target}"
runs=${BENCH_RUNS:-5}
venv=${DEPLOYER_VENV:-$root/.venv}
act=$venv/bin/act
if [ ! -x "$act" ]; then scripts/stack install >/dev/null; fi

binary=$CARGO_TARGET_DIR/release/deployer
if [ ! -x "$binary" ]; then
  cargo build --locked -q -p deployer --bin deployer
  binary=$CARGO_TARGET_DIR/debug/deployer
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
asset=deployer-x86_64-unknown-linux-musl
case "$(uname -s)/$(uname -m)" in
  Linux/aarch64) asset=deployer-aarch64-unknown-linux-musl ;;
  Darwin/arm64) asset=deployer-aarch64-apple-darwin ;;
esac

# The "release": the asset, and an action tree whose checksums name it.
mkdir -p "$work/assets" "$work/release/scripts" "$work/release/checksums" "$work/toolcache" "$work/bin"
cp "$binary" "$work/assets/$asset"
cp action.yml "$work/release/"
cp scripts/action.sh "$work/release/scripts/"
{
  echo "# release: https://github.invalid/org/deployer/releases/download/v1.0.0"
  echo "$(sha256sum <"$binary" | cut -d' ' -f1)  $asset"
} >"$work/release/checksums/release.sha256"
echo "asset-base-url=file://$work/assets" >"$work/release/test-overrides.env"

# A branch pin: the action's source, no checksums.
mkdir -p "$work/branch/scripts"
cp -r action.yml Cargo.toml Cargo.lock src sim "$work/branch/"
cp scripts/action.sh "$work/branch/scripts/"
rm -rf "$work/branch/sim/target"
cat >"$work/bin/cargo" <<EOF
#!/bin/sh
mkdir -p "\$CARGO_TARGET_DIR/release" && cp '$binary' "\$CARGO_TARGET_DIR/release/deployer"
EOF
chmod 755 "$work/bin/cargo"

# The application repository: one workflow per case, no deployer.toml.
app=$work/app
mkdir -p "$app/.github/workflows"
workflow() { # NAME USES [WITH-LINE]
  cat >"$app/.github/workflows/$1.yml" <<EOF
name: $1
on: push
permissions: {}
jobs:
  setup:
    runs-on: ubuntu-latest
    steps:
      - id: deploy
        uses: $2
        continue-on-error: true
${3:-}
EOF
}
workflow direct org/deployer@v1 "        with:
          binary: $binary"
workflow release org/deployer@v1
workflow source org/deployer@branch
(cd "$app" && git init -q && git -c user.name=b -c user.email=b@e add -A && git -c user.name=b -c user.email=b@e commit -qm app)

# One act run; prints the action step's duration in seconds.
step_time() { # WORKFLOW
  local home
  home=$(mktemp -d "$work/home.XXXXXX")
  echo '{"ref": "refs/heads/main"}' >"$home/event.json"
  (cd "$app" && env -i HOME="$home" PATH="$work/bin:$PATH" "$act" push -W ".github/workflows/$1.yml" \
    -e "$home/event.json" -P ubuntu-latest=-self-hosted \
    --local-repository "org/deployer@v1=$work/release" --local-repository "org/deployer@branch=$work/branch" \
    --env "RUNNER_TOOL_CACHE=$work/toolcache" 2>&1) |
    python3 -c '
import re, sys
log = sys.stdin.read()
m = re.search(r"(?:Success|Failure) - Main org/deployer@\S+ \[([0-9.]+)(µs|ms|s|m[0-9.]+s)\]", log)
if not m or "needs a policy" not in log:
    sys.exit("no timed deployer step in the act log:\n" + log[-3000:])
v, unit = m.groups()
scale = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}
print(float(v) * scale[unit] if unit in scale else 60 * float(v) + float(unit[1:-1]))
'
  rm -rf -- "$home"
}

median() { python3 -c 'import statistics, sys; print("%.3f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

measure() { # WORKFLOW [FRESH-CACHE]
  local times=()
  for _ in $(seq 1 "$runs"); do
    if [ "${2:-}" = fresh ]; then rm -rf -- "$work/toolcache/deployer"; fi
    times+=("$(step_time "$1")")
  done
  median "${times[@]}"
}

size=$(($(wc -c <"$binary") / 1048576))
echo "binary: $binary ($size MiB), $runs runs per case, act $("$act" --version | awk '{print $3}')"
direct=$(measure direct)
release=$(measure release fresh)
step_time release >/dev/null # warm the release cache
cached=$(measure release)
step_time source >/dev/null # the cold source run (stub cargo) warms its cache
source=$(measure source)
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
printf 'direct   (binary input, nothing verified)        %6.3f s\n' "$direct"
printf 'release  (verified asset, download + cache)      %6.3f s   %s x direct\n' "$release" "$(ratio "$release" "$direct")"
printf 'cached   (verified asset from the tool cache)    %6.3f s   %s x direct\n' "$cached" "$(ratio "$cached" "$direct")"
printf 'source   (branch pin, warm source-build cache)   %6.3f s   %s x direct\n' "$source" "$(ratio "$source" "$direct")"
