#!/usr/bin/env bash
# bench/push.sh: how fast `deployer push` is against its peer and against the wire.
#
# Builds a >= 1 GiB image in 8 incompressible layers as an OCI layout, starts a fresh local
# stack (moto for the ECR API, a fresh docker-registry for bytes), and in one run times:
#   1. skopeo copy oci:DIR docker://registry/skopeo:v1            (Debian skopeo, 6 parallel)
#   2. deployer push --source oci:DIR                              (default concurrency)
#   3. a raw single-stream HTTP PUT of the same blobs with curl    (the wire's limit)
#   4. the no-op re-push                                           (everything HEAD-skipped)
#   5. a docker-archive of 4 uncompressed layers: the first push (compressed into the layer
#      cache) and a push into a fresh repository from the cache (each hit read once and
#      checked against both digests before the manifest names it)
#   6. peak RSS of deployer pushing one 2 GiB layer                (/usr/bin/time -v)
# and prints each time and the ratios. BENCH_CONCURRENCY="1 2 4 6 8" adds a sweep of
# --concurrency. DEPLOYER_BASELINE_BIN=path adds an A/B of this build against another one
# (e.g. main's): BENCH_AB_ROUNDS (default 5) rounds of both pushing the OCI image, then the
# archive from the cache, each into a fresh repository, which goes first alternating; it prints
# both medians and their ratio. Everything stays on 127.0.0.1; images live under $BENCH_DIR
# (default /tmp) and are deleted at the end.
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
ab_rounds=${BENCH_AB_ROUNDS:-5}
# A/B: LABEL SOURCE — this build and DEPLOYER_BASELINE_BIN push SOURCE into fresh
# repositories, alternating which goes first; prints the medians and the ratio.
ab() {
  local label=$1 source=$2 i t0 bin kind base=() new=()
  for i in $(seq "$ab_rounds"); do
    for kind in $( ((i % 2)) && echo "base new" || echo "new base"); do
      bin=$DEPLOYER_BIN
      [ "$kind" = base ] && bin=$DEPLOYER_BASELINE_BIN
      t0=$(now)
      "$bin" push --source "$source" --repository "bench/ab-$label-$kind-$i" --tag v1 --create-repository \
        >/dev/null 2>"$work/push.log"
      if [ "$kind" = base ]; then base+=("$(secs "$t0" "$(now)")"); else new+=("$(secs "$t0" "$(now)")"); fi
    done
  done
  python3 - "$label" "${base[*]}" "${new[*]}" <<'PY'
import statistics as st, sys
label, b, n = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
print(f"A/B {label}: baseline median {st.median(b):.3f} s ({min(b):.3f}-{max(b):.3f}), "
      f"this build median {st.median(n):.3f} s ({min(n):.3f}-{max(n):.3f}); this / baseline {st.median(n) / st.median(b):.2f}")
PY
}
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

if [ -n "${DEPLOYER_BASELINE_BIN:-}" ]; then
  ab oci "oci:$work/image"
fi

# 5. docker-archive: first push (compress into the cache), then from the cache
archive_layers=${BENCH_ARCHIVE_LAYERS:-4}
log "making a ${archive_layers}x${layer_mib} MiB docker-archive"
python3 - "$work/image.tar" "$archive_layers" "$layer_mib" <<'PY'
import hashlib, io, json, os, sys, tarfile
out, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def member(t, name, data):
    info = tarfile.TarInfo(name); info.size = len(data); info.mtime = 0
    t.addfile(info, io.BytesIO(data))
with tarfile.open(out, mode="w", format=tarfile.USTAR_FORMAT) as t:
    names, diff_ids = [], []
    for i in range(n):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as lt:
            member(lt, f"layer{i}.bin", os.urandom(mib << 20))
        raw = buf.getvalue(); del buf
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        names.append(f"l{i}/layer.tar")
        member(t, names[-1], raw); del raw
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    member(t, "config.json", cfg)
    member(t, "manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["bench:1"], "Layers": names}]).encode())
PY
export DEPLOYER_CACHE_DIR=$work/cache
archive_push() { # REPO
  "$DEPLOYER_BIN" push --source "docker-archive:$work/image.tar" --repository "$1" --tag v1 --create-repository \
    >/dev/null 2>"$work/push.log"
}
t0=$(now)
archive_push bench/archive-a
t_archive=$(secs "$t0" "$(now)")
t0=$(now)
archive_push bench/archive-b
t_archive_cached=$(secs "$t0" "$(now)")
echo "docker-archive ${archive_layers}x${layer_mib} MiB, first push (compress): ${t_archive} s; from the cache into a fresh repository: ${t_archive_cached} s"
if [ -n "${DEPLOYER_BASELINE_BIN:-}" ]; then
  ab archive-from-cache "docker-archive:$work/image.tar"
fi
rm -f "$work/image.tar"

# 6. peak RSS with one 2 GiB layer
rm -rf "$work/image"
log "making a 1x${big_mib} MiB OCI layout"
make_layout "$work/image" 1 "$big_mib"
/usr/bin/time -v "$DEPLOYER_BIN" push --source "oci:$work/image" --repository bench/big --tag v1 --create-repository \
  >/dev/null 2>"$work/time.log"
rss_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.log")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.log")
echo "peak RSS pushing a ${big_mib} MiB layer: $((rss_kib / 1024)) MiB (wall $wall)   (target < 200 MiB)"
