#!/usr/bin/env bash
# Deploy benchmark (issue 6): on ecs-sim (time scale 0.05), how long after ECS first reports a
# failing task deployer starts the rollback, and how many ECS API calls a deploy costs —
# deployer's adaptive polling (2 s growing to 10 s, reset on change) against a fixed 15 s poll,
# the interval of `aws ecs wait services-stable`. Prints both and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deployer-target}"
scripts/stack install >/dev/null
cargo build --workspace --bins --locked -q
cargo test --locked -q --test it deploy::bench_detection_latency_and_api_calls -- --ignored --nocapture 2>&1 \
  | grep -E "^(deployer|fixed|ratio)|panicked|FAILED"
