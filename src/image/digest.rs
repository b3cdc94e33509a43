//! Digests checked while the bytes pass, never in a second read.
//!
//! [`Verifier`] stands between a blob's reader and its upload: each chunk is hashed before it is
//! handed on, and the chunk that completes the blob is handed on only when the whole blob hashed
//! to the digest (and had the size) its descriptor names. A mismatch therefore ends the request
//! body before its last byte, so the registry never receives a complete wrong blob.
//!
//! [`layer_digests`] reads a compressed layer once: the digest and size of its bytes as they are,
//! and, decompressed in the same pass, the digest of the tar inside (what an image config's
//! `diff_ids` name). Pure over readers and byte slices.

use std::io::{self, BufRead, Read, Write};

use sha2::{Digest as _, Sha256};

use super::hex;

/// Why a blob's bytes are not the blob its descriptor names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("it holds more than the {size} bytes its descriptor says")]
    TooLong { size: u64 },
    #[error("it ended after {seen} of the {size} bytes its descriptor says")]
    TooShort { seen: u64, size: u64 },
    #[error("its bytes hash to {actual}")]
    Digest { actual: String },
}

/// The running check of one blob against its `sha256:` digest and size.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected: String,
    size: u64,
    seen: u64,
    hasher: Sha256,
    checked: bool,
}

impl Verifier {
    pub fn new(digest: &str, size: u64) -> Self {
        Verifier { expected: digest.to_string(), size, seen: 0, hasher: Sha256::new(), checked: false }
    }

    /// Account for `chunk`, which is about to be sent. An error means: do not send it (the
    /// chunk that would complete the blob is refused when the blob is not the one named).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Mismatch> {
        let seen = self.seen + chunk.len() as u64;
        if seen > self.size || (self.checked && !chunk.is_empty()) {
            return Err(Mismatch::TooLong { size: self.size });
        }
        self.hasher.update(chunk);
        self.seen = seen;
        if seen == self.size { self.check() } else { Ok(()) }
    }

    /// The reader reached its end: the blob must be complete and checked.
    pub fn finish(&mut self) -> Result<(), Mismatch> {
        if self.seen < self.size {
            return Err(Mismatch::TooShort { seen: self.seen, size: self.size });
        }
        if self.checked { Ok(()) } else { self.check() }
    }

    fn check(&mut self) -> Result<(), Mismatch> {
        self.checked = true;
        let actual = format!("sha256:{}", hex(&self.hasher.finalize_reset()));
        if actual == self.expected { Ok(()) } else { Err(Mismatch::Digest { actual }) }
    }
}

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// Recognised by the first bytes of the layer.
    pub fn sniff(head: &[u8]) -> Option<Self> {
        match head {
            [0x1f, 0x8b, ..] => Some(Compression::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => super::OCI_LAYER_GZIP,
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// What one read of a compressed layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// `sha256:` of the bytes as they are (the blob digest).
    pub compressed: String,
    pub size: u64,
    /// `sha256:` of the decompressed bytes (the config's diff id).
    pub uncompressed: String,
}

/// Read `reader` to its end once, hashing its bytes and, decompressed on the way, the layer
/// inside. An error means the bytes are not valid `compression` data (or could not be read).
pub fn layer_digests(reader: impl Read, compression: Compression) -> io::Result<LayerDigests> {
    let mut tee = io::BufReader::with_capacity(1 << 20, Tee { inner: reader, hasher: Sha256::new(), n: 0 });
    let mut plain = HashWriter(Sha256::new());
    match compression {
        Compression::Gzip => {
            // Concatenated members are one valid gzip stream.
            let mut gz = flate2::bufread::MultiGzDecoder::new(&mut tee);
            io::copy(&mut gz, &mut plain)?;
        }
        Compression::Zstd => {
            // Frame after frame until the input ends (skippable frames are skipped).
            while !tee.fill_buf()?.is_empty() {
                match ruzstd::decoding::StreamingDecoder::new(&mut tee) {
                    Ok(mut frame) => {
                        io::copy(&mut frame, &mut plain)?;
                    }
                    Err(ruzstd::decoding::errors::FrameDecoderError::ReadFrameHeaderError(
                        ruzstd::decoding::errors::ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        io::copy(&mut (&mut tee).take(u64::from(length)), &mut io::sink())?;
                    }
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
                }
            }
        }
    }
    // Whatever the decoder left unread still belongs to the blob.
    io::copy(&mut tee, &mut io::sink())?;
    let tee = tee.into_inner();
    Ok(LayerDigests {
        compressed: format!("sha256:{}", hex(&tee.hasher.finalize())),
        size: tee.n,
        uncompressed: format!("sha256:{}", hex(&plain.0.finalize())),
    })
}

/// Hashes and counts what is read through it.
struct Tee<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// A sink that hashes what is written to it.
pub struct HashWriter(pub Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sha256_hex;

    fn digest(b: &[u8]) -> String {
        format!("sha256:{}", sha256_hex(b))
    }

    /// Feed `chunks` as an upload would; returns how many bytes were let through and the
    /// first refusal.
    fn run(digest: &str, size: u64, chunks: &[&[u8]]) -> (usize, Option<Mismatch>) {
        let mut v = Verifier::new(digest, size);
        let mut sent = 0;
        for c in chunks {
            if let Err(e) = v.feed(c) {
                return (sent, Some(e));
            }
            sent += c.len();
        }
        (sent, v.finish().err())
    }

    #[test]
    fn the_last_chunk_is_held_until_the_blob_matches() {
        let good = b"hello world";
        let d = digest(good);
        let evil = b"hellO world";
        type Case<'a> = (&'a str, &'a [&'a [u8]], u64, usize, Option<Mismatch>);
        let table: Vec<Case> = vec![
            ("whole blob in one chunk", &[b"hello world"], 11, 11, None),
            ("split blob", &[b"hello", b" ", b"world"], 11, 11, None),
            ("empty chunks are harmless", &[b"hello", b"", b" world"], 11, 11, None),
            (
                "wrong bytes: the last chunk never leaves",
                &[b"hellO", b" world"],
                11,
                5,
                Some(Mismatch::Digest { actual: digest(evil) }),
            ),
            ("too long", &[b"hello world", b"!"], 11, 11, Some(Mismatch::TooLong { size: 11 })),
            ("longer in one chunk", &[b"hello world!"], 11, 0, Some(Mismatch::TooLong { size: 11 })),
            ("too short", &[b"hello"], 11, 5, Some(Mismatch::TooShort { seen: 5, size: 11 })),
        ];
        for (name, chunks, size, sent, err) in table {
            assert_eq!(run(&d, size, chunks), (sent, err), "{name}");
        }
        // The empty blob is checked at the end.
        assert_eq!(run(&digest(b""), 0, &[]), (0, None));
        assert!(matches!(run(&d, 0, &[]), (0, Some(Mismatch::Digest { .. }))));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn compressed_layers_are_hashed_both_ways_in_one_read() {
        let tar = vec![7u8; 300_000];
        let gz = gzip(&tar);
        let got = layer_digests(&gz[..], Compression::Gzip).unwrap();
        assert_eq!(got, LayerDigests { compressed: digest(&gz), size: gz.len() as u64, uncompressed: digest(&tar) });
        // Two members: one stream of both.
        let mut two = gzip(b"abc");
        two.extend(gzip(b"def"));
        assert_eq!(layer_digests(&two[..], Compression::Gzip).unwrap().uncompressed, digest(b"abcdef"));
        // Trailing garbage and truncation are errors, not silently ignored bytes.
        let mut trailing = gz.clone();
        trailing.extend_from_slice(b"garbage!");
        assert!(layer_digests(&trailing[..], Compression::Gzip).is_err());
        assert!(layer_digests(&gz[..gz.len() - 10], Compression::Gzip).is_err());
        assert!(layer_digests(&b"not gzip"[..], Compression::Gzip).is_err());
    }

    #[test]
    fn zstd_layers_are_decompressed_too() {
        // `printf 'hello zstd\n' | zstd -c | xxd -i`
        let frame: &[u8] = &[
            0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x59, 0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x7a, 0x73, 0x74,
            0x64, 0x0a, 0x6c, 0x57, 0xf9, 0x51,
        ];
        let got = layer_digests(frame, Compression::Zstd).unwrap();
        assert_eq!(got.uncompressed, digest(b"hello zstd\n"));
        assert_eq!(got.compressed, digest(frame));
        // A skippable frame before it changes the blob, not the layer.
        let mut skip = vec![0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3];
        skip.extend_from_slice(frame);
        let got = layer_digests(&skip[..], Compression::Zstd).unwrap();
        assert_eq!(got.uncompressed, digest(b"hello zstd\n"));
        assert_eq!(got.size, skip.len() as u64);
        assert!(layer_digests(&frame[..frame.len() - 3], Compression::Zstd).is_err());
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Some(Compression::Gzip));
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Some(Compression::Zstd));
        assert_eq!(Compression::sniff(b"ustar"), None);
        assert_eq!(Compression::sniff(&[0x1f]), None);
    }
}
