//! The checksums S3 verifies (per part, composite of the parts, full object), computed here
//! from the bytes, in S3's wire form (base64 of the big-endian digest).

use sha2::{Digest, Sha256};

use super::ChecksumKind;

/// The raw digest of some bytes: 4 bytes for CRC32C, 32 for SHA-256.
pub(crate) fn digest(kind: ChecksumKind, data: &[u8]) -> Vec<u8> {
    match kind {
        ChecksumKind::Crc32c => crc_fast::crc32_iscsi(data).to_be_bytes().to_vec(),
        ChecksumKind::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// One part's checksum, raw and as sent in `x-amz-checksum-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartChecksum {
    pub raw: Vec<u8>,
    pub base64: String,
}

impl PartChecksum {
    pub(crate) fn of(kind: ChecksumKind, data: &[u8]) -> Self {
        let raw = digest(kind, data);
        let base64 = base64(&raw);
        PartChecksum { raw, base64 }
    }
}

/// S3's composite checksum of a multipart object: the checksum of the concatenated raw part
/// checksums, in base64, followed by `-` and the number of parts.
pub(crate) fn composite<'a>(
    kind: ChecksumKind,
    parts: impl IntoIterator<Item = &'a PartChecksum>,
) -> String {
    let mut joined = Vec::new();
    let mut count = 0u32;
    for part in parts {
        joined.extend_from_slice(&part.raw);
        count += 1;
    }
    format!("{}-{count}", base64(&digest(kind, &joined)))
}

/// Whether S3's report of a composite checksum is the one computed here. S3 writes it as
/// `base64-N`; a report without the `-N` suffix is accepted when the digest matches (some
/// S3-compatible stores leave it out), one with another part count is not.
pub(crate) fn composite_matches(local: &str, reported: &str) -> bool {
    if reported == local {
        return true;
    }
    !reported.contains('-') && local.split_once('-').map(|(digest, _)| digest) == Some(reported)
}

/// The running SHA-256 of the whole stream, and its length.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamDigest {
    sha256: Sha256,
    bytes: u64,
}

impl StreamDigest {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        // A usize always fits in a u64 on the targets Rust supports.
        self.bytes += data.len() as u64;
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn finish_hex(self) -> String {
        hex::encode(self.sha256.finalize())
    }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648), as S3 writes checksums.
pub(crate) fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(BASE64_ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_follows_rfc4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C of "123456789" is 0xE3069283 (the catalogue's check value).
        assert_eq!(
            digest(ChecksumKind::Crc32c, b"123456789"),
            vec![0xe3, 0x06, 0x92, 0x83]
        );
        // S3's documented form: base64 of the big-endian value.
        assert_eq!(
            PartChecksum::of(ChecksumKind::Crc32c, b"123456789").base64,
            "4waSgw=="
        );
    }

    #[test]
    fn sha256_part_checksum_is_base64_of_the_digest() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(
            PartChecksum::of(ChecksumKind::Sha256, b"abc").base64,
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn crc32c_composite_of_two_parts_is_a_known_value() {
        let part1 = vec![b'a'; 5 * 1024 * 1024];
        let part2 = b"the last, short part".to_vec();
        let checksums = [
            PartChecksum::of(ChecksumKind::Crc32c, &part1),
            PartChecksum::of(ChecksumKind::Crc32c, &part2),
        ];
        // Computed independently (a bitwise CRC-32C in Python): the CRC-32C of the two
        // big-endian part CRCs, base64, then the part count.
        assert_eq!(composite(ChecksumKind::Crc32c, &checksums), "2dYVLQ==-2");
    }

    #[test]
    fn sha256_composite_of_two_parts_is_a_known_value() {
        let checksums = [
            PartChecksum::of(ChecksumKind::Sha256, b"abc"),
            PartChecksum::of(ChecksumKind::Sha256, b"def"),
        ];
        // Computed independently with coreutils: the binary SHA-256 digests of "abc" and
        // "def", concatenated, through `sha256sum`, base64.
        assert_eq!(
            composite(ChecksumKind::Sha256, &checksums),
            "nATTAFe3VK8bLS1PVnV4LdYaWmWcNO5sKvR1JrZsr6Y=-2"
        );
    }

    #[test]
    fn composite_comparison_accepts_only_the_same_digest_and_count() {
        assert!(composite_matches("AAAAAA==-3", "AAAAAA==-3"));
        assert!(composite_matches("AAAAAA==-3", "AAAAAA=="));
        assert!(!composite_matches("AAAAAA==-3", "AAAAAA==-2"));
        assert!(!composite_matches("AAAAAA==-3", "BBBBBB==-3"));
        assert!(!composite_matches("AAAAAA==-3", ""));
    }

    #[test]
    fn stream_digest_counts_and_hashes() {
        let mut stream = StreamDigest::default();
        stream.update(b"ab");
        stream.update(b"c");
        assert_eq!(stream.bytes(), 3);
        assert_eq!(
            stream.finish_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
