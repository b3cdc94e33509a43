//! Images built by the tests themselves: random (incompressible) layers written as an OCI
//! layout (single image or a multi-arch index), a legacy `docker save` tar (`manifest.json`,
//! `<id>/layer.tar`), and a Docker 25+ tar that is also an OCI layout.

use std::io::Write;
use std::path::Path;

use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// One layer: an uncompressed tar holding one random file, and its gzip.
#[derive(Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub gz: Vec<u8>,
}

impl Layer {
    pub fn random(size: usize, name: &str) -> Self {
        let mut data = vec![0u8; size];
        rand::rng().fill_bytes(&mut data);
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, &data[..]).expect("tar");
        let tar = builder.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        Layer { tar, gz: gz.finish().expect("gzip") }
    }

    pub fn diff_id(&self) -> String {
        sha(&self.tar)
    }
}

pub fn layers(n: usize, size: usize) -> Vec<Layer> {
    (0..n).map(|i| Layer::random(size, &format!("file{i}.bin"))).collect()
}

pub fn config(layers: &[Layer], arch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/file0.bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(Layer::diff_id).collect::<Vec<_>>()},
    }))
    .unwrap()
}

fn write_blob(dir: &Path, bytes: &[u8]) -> (String, u64) {
    let digest = sha(bytes);
    let path = dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    (digest, bytes.len() as u64)
}

/// An OCI image manifest over gzip layers; its blobs written into `dir`. Returns (digest, bytes).
pub fn oci_manifest(dir: &Path, layers: &[Layer], arch: &str) -> (String, Vec<u8>) {
    let (cd, cs) = write_blob(dir, &config(layers, arch));
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| {
            let (d, s) = write_blob(dir, &l.gz);
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layer_descs,
    }))
    .unwrap();
    let (md, _) = write_blob(dir, &manifest);
    (md, manifest)
}

fn write_layout(dir: &Path, media_type: &str, digest: &str, size: usize, ref_name: &str) {
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type, "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A single-image OCI layout in `dir`; returns the manifest digest.
pub fn oci_layout(dir: &Path, layers: &[Layer]) -> String {
    let (digest, bytes) = oci_manifest(dir, layers, "amd64");
    write_layout(dir, "application/vnd.oci.image.manifest.v1+json", &digest, bytes.len(), "latest");
    digest
}

/// A two-platform OCI layout (an image index over amd64 and arm64, sharing one layer).
/// Returns (index digest, child digests).
pub fn multi_arch_layout(dir: &Path, shared: &Layer, amd: &[Layer], arm: &[Layer]) -> (String, Vec<String>) {
    let mut children = Vec::new();
    let mut descs = Vec::new();
    for (arch, own) in [("amd64", amd), ("arm64", arm)] {
        let mut all = vec![shared.clone()];
        all.extend_from_slice(own);
        let (d, bytes) = oci_manifest(dir, &all, arch);
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": bytes.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
        children.push(d);
    }
    // Pretty-printed on purpose: bytes that a re-serialisation would change.
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descs,
    }))
    .unwrap();
    let (id, _) = write_blob(dir, &index);
    write_layout(dir, "application/vnd.oci.image.index.v1+json", &id, index.len(), "latest");
    (id, children)
}

fn append(builder: &mut tar::Builder<std::fs::File>, name: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder.append_data(&mut header, name, bytes).unwrap();
}

fn symlink(builder: &mut tar::Builder<std::fs::File>, name: &str, target: &str) {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    header.set_mtime(0);
    builder.append_link(&mut header, name, target).unwrap();
}

/// A legacy `docker save` tar: `<id>/layer.tar`, `<config hex>.json`, `manifest.json`.
/// `skip_layer` leaves one layer out (a broken archive). Returns the config bytes.
pub fn legacy_archive(path: &Path, layers: &[Layer], skip_layer: Option<usize>) -> Vec<u8> {
    archive_with(path, layers, skip_layer, false)
}

/// Like [`legacy_archive`]; with `gzip` the layer files are the gzip bytes, as a
/// containerd-backed `docker save` writes them.
pub fn archive_with(path: &Path, layers: &[Layer], skip_layer: Option<usize>, gzip: bool) -> Vec<u8> {
    let cfg = config(layers, "amd64");
    let cfg_name = format!("{}.json", sha(&cfg).trim_start_matches("sha256:"));
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let id = format!("{:x}", Sha256::digest(format!("layer{i}{}", l.diff_id())));
        let name = format!("{id}/layer.tar");
        if Some(i) != skip_layer {
            append(&mut b, &format!("{id}/VERSION"), b"1.0");
            append(&mut b, &name, if gzip { &l.gz } else { &l.tar });
        }
        names.push(name);
    }
    append(&mut b, &cfg_name, &cfg);
    let manifest = json!([{"Config": cfg_name, "RepoTags": ["shop:1"], "Layers": names}]);
    append(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    append(&mut b, "repositories", br#"{"shop":{"1":"x"}}"#);
    b.finish().unwrap();
    cfg
}

/// A Docker 25+ `docker save` tar: an OCI layout (uncompressed layers under blobs/sha256) with
/// a `manifest.json` pointing into it, and legacy-path symlinks. Returns the config bytes.
pub fn docker25_archive(path: &Path, layers: &[Layer]) -> Vec<u8> {
    let cfg = config(layers, "amd64");
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut layer_descs = Vec::new();
    let mut names = Vec::new();
    for l in layers {
        let d = l.diff_id();
        append(&mut b, &blob(&d), &l.tar);
        layer_descs
            .push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.tar.len()}));
        names.push(blob(&d));
    }
    // One legacy path as a symlink, as Docker 25 writes them.
    let legacy = format!("{}/layer.tar", layers[0].diff_id().trim_start_matches("sha256:"));
    symlink(&mut b, &legacy, &format!("../{}", blob(&layers[0].diff_id())));
    names[0] = legacy;
    append(&mut b, &blob(&sha(&cfg)), &cfg);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&cfg), "size": cfg.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    append(&mut b, &blob(&sha(&manifest)), &manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": "docker.io/library/shop:1", "org.opencontainers.image.ref.name": "1"},
    }]});
    append(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    append(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let dm = json!([{"Config": blob(&sha(&cfg)), "RepoTags": ["shop:1"], "Layers": names}]);
    append(&mut b, "manifest.json", &serde_json::to_vec(&dm).unwrap());
    b.finish().unwrap();
    cfg
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).expect("gunzip");
    out
}
