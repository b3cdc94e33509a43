#!/usr/bin/env bash
# bench/push.sh: how fast `deployer push` is against its peer and against the wire.
#
# Builds a >= 1 GiB image in 8 incompressible layers as an OCI layout, starts a fresh local
# stack (moto for the ECR API, a fresh docker-registry for bytes), and in one run times:
#   1. skopeo copy oci:DIR docker://registry/skopeo:v1            (Debian skopeo, 6 parallel)
#   2. deployer push --source oci:DIR                              (default concurrency)
#   3. a raw single-stream HTTP PUT of the same blobs with curl    (the wire's limit)
#   4. the no-op re-push                                           (everything HEAD-skipped)
#   5. peak RSS of deployer pushing one 2 GiB layer                (/usr/bin/time -v)
# and prints each time and the ratios. BENCH_CONCURRENCY="1 2 4 6 8" adds a sweep of
# --concurrency. Everything stays on 127.0.0.1; images live under $BENCH_DIR (default /tmp)
# and are deleted at the end.
#
#   bench/push.sh                   # builds target/release/deployer first
#   DEPLOYER_BIN=path bench/push.sh # use that binary
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${BENCH_DIR:-/tmp}/deployer-bench-push.XXXXXX")
layers=${BENCH_LAYERS:-8}
layer_mib=${BENCH_LAYER_MIB:-128}
big_mib=${BENCH_BIG_MIB:-2048}
export DEPLOYER_STACK_DIR=$work/stack

cleanup() {
  "$root/scripts/stack" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

log() { printf 'bench: %s\n' "$*" >&2; }

if [ -z "${DEPLOYER_BIN:-}" ]; then
  log "building deployer (release)"
  (cd "$root" && cargo build --release --quiet --bin deployer)
  DEPLOYER_BIN=${CARGO_TARGET_DIR:-$root/target}/release/deployer
fi

# An OCI layout of N random layers, each a tar of one random file, gzip level 0 (stored
# blocks: valid gzip, incompressible content, quick to make).
make_layout() { # DIR N MIB
  python3 - "$1" "$2" "$3" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
out, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)
layers, diff_ids = [], []
for i in range(n):
    payload = os.urandom(mib << 20)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo(f"layer{i}.bin"); info.size = len(payload); info.mtime = 0
        t.addfile(info, io.BytesIO(payload))
    raw = buf.getvalue(); del payload
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    gz = gzip.compress(raw, compresslevel=0, mtime=0); del raw
    d, s = put(gz); del gz
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cd, cs = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
    "layers": layers}).encode()
md, ms = put(man)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
PY
}

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

log "making a ${layers}x${layer_mib} MiB OCI layout in $work/image"
make_layout "$work/image" "$layers" "$layer_mib"
total_bytes=$(du -sb "$work/image/blobs" | cut -f1)

log "starting moto + a fresh docker-registry"
eval "$("$root/scripts/stack" up 2>/dev/null)"
reg=$DEPLOYER_REGISTRY_ENDPOINT
host=${reg#http://}
case "$host" in 127.0.0.1:*) ;; *) log "registry is not on loopback: $reg"; exit 1 ;; esac

push() { # REPO [extra args]
  local repo=$1; shift
  "$DEPLOYER_BIN" push --source "oci:$work/image" --repository "$repo" --tag v1 --create-repository "$@" >/dev/null 2>"$work/push.log"
}

# 1. skopeo
t0=$(now)
skopeo copy --quiet --dest-tls-verify=false "oci:$work/image" "docker://$host/bench/skopeo:v1"
t_skopeo=$(secs "$t0" "$(now)")

# 2. deployer
t0=$(now)
push bench/deployer
t_deployer=$(secs "$t0" "$(now)")

# 3. raw single-stream PUT: one blob after another, each POST + one streaming PUT (curl -T).
t0=$(now)
for blob in "$work"/image/blobs/sha256/*; do
  digest=sha256:$(basename "$blob")
  location=$(curl -sS -o /dev/null -D - -X POST -H 'Content-Length: 0' "$reg/v2/bench/raw/blobs/uploads/" \
    | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  case "$location" in http*) ;; *) location=$reg$location ;; esac
  curl -sS -f -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$blob" "$location&digest=$digest"
done
t_raw=$(secs "$t0" "$(now)")

# 4. no-op re-push (best of 3)
t_noop=999
for _ in 1 2 3; do
  t0=$(now)
  push bench/deployer
  t=$(secs "$t0" "$(now)")
  t_noop=$(python3 -c "print(min($t_noop, $t))")
done

mib=$(python3 -c "print(f'{$total_bytes / 1048576:.0f}')")
tput() { python3 -c "print(f'{$total_bytes / 1048576 / $1:.0f}')"; }
echo "image: $mib MiB in $layers layers (+ config), OCI layout, registry docker-registry on $host"
echo "skopeo copy:          ${t_skopeo} s  ($(tput "$t_skopeo") MiB/s)"
echo "deployer push:        ${t_deployer} s  ($(tput "$t_deployer") MiB/s)"
echo "raw single-stream PUT: ${t_raw} s  ($(tput "$t_raw") MiB/s)"
echo "no-op re-push:        ${t_noop} s (best of 3)"
echo "deployer / skopeo time:               $(ratio "$t_deployer" "$t_skopeo")   (target <= 0.80)"
echo "deployer / raw PUT throughput:        $(ratio "$t_raw" "$t_deployer")   (target >= 0.70)"

for c in ${BENCH_CONCURRENCY:-}; do
  t0=$(now)
  push "bench/deployer-c$c" --concurrency "$c"
  t=$(secs "$t0" "$(now)")
  echo "deployer push --concurrency $c: ${t} s  ($(tput "$t") MiB/s)"
done

# 5. peak RSS with one 2 GiB layer
rm -rf "$work/image"
log "making a 1x${big_mib} MiB OCI layout"
make_layout "$work/image" 1 "$big_mib"
/usr/bin/time -v "$DEPLOYER_BIN" push --source "oci:$work/image" --repository bench/big --tag v1 --create-repository \
  >/dev/null 2>"$work/time.log"
rss_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.log")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.log")
echo "peak RSS pushing a ${big_mib} MiB layer: $((rss_kib / 1024)) MiB (wall $wall)   (target < 200 MiB)"
