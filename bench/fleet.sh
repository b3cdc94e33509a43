#!/usr/bin/env bash
# Fleet benchmark (issue 19): one `deployer deploy` to N one-task services on ecs-sim (time
# scale 0.1, default polling), counting every ECS call at the sim: calls per service, calls in
# the first second per ECS bucket, wall time, at N = 1, 10, 40 (FLEET_SIZES); a replay of each
# run's calls against ECS's token buckets; a projection to N = 200; and the largest N again
# with the sim enforcing ECS's throttling. With FLEET_PEER_BIN=PATH (a deployer built from an
# earlier commit, e.g. the one before the fleet work) the peer runs first, the same way, and
# the ratios are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deployer-target}"
scripts/stack install >/dev/null
cargo build --workspace --bins --locked -q
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --locked -q --test it fleet::bench_fleet_calls_and_wall_time -- --ignored --nocapture 2>&1 \
  | grep -E "^(deployer|peer)|panicked|FAILED" | tee "$out"
if grep -q "^peer" "$out"; then
  # Ratios: calls per service and wall time, peer / deployer, at each N measured both ways.
  awk '
    /unthrottled N=/ {
      who = $1; n = $3; sub("N=", "", n);
      for (i = 1; i <= NF; i++) {
        if ($i == "wall") wall[who, n] = $(i + 1);
        if ($i == "ECS" && $(i + 1) == "calls") calls[who, n] = $(i - 1);
      }
      ns[n] = 1
    }
    END {
      for (n in ns) if ((("peer", n) in calls) && (("deployer", n) in calls))
        printf "ratio N=%s: ECS calls %.1fx fewer (%s vs %s), wall time %.2fx (%s s vs %s s)\n",
          n, calls["peer", n] / calls["deployer", n], calls["peer", n], calls["deployer", n],
          wall["peer", n] / wall["deployer", n], wall["peer", n], wall["deployer", n]
    }' "$out" | sort -t= -k2 -n
fi
