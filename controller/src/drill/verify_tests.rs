//! Tests of the drill's archive verifier: the pure parts (checksums, full-object and
//! composite; the tar against the manifest) on archives the agent's own archiver builds, and
//! `verify_archives` against the emulator's S3 on archives the agent's own uploader stores.

// A failed unwrap in a test is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use lifeguard_agent::archive::{
    ArchiveOutcome, ArchiveSpec, Compression as Packing, DEFAULT_MAX_FILES, ExtraEntry,
    MIN_BLOCK_BYTES, build_archive,
};
use lifeguard_agent::upload::{
    ArchiveStore, ChecksumKind, ObjectSpec, PartWriter, S3Store, ServerSideEncryption,
    UploadPolicy, part_channel,
};
use lifeguard_e2e::{Clients, Emulator, eventually};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::verify::{
    Algorithm, ArchiveCheck, Compression, DigestPlan, EntryKind, ObjectDigest, Stored,
    StoredChecksum, TarListing, checksum_problem, compare, digest_of, digest_plan, etag_parts,
    list_tar, parse_manifest, parse_stored, scan, verify_archives,
};

const MIB: usize = 1024 * 1024;
const KEY: &str = "lifeguard/web/i-0123456789abcdef0/AROAEXAMPLE:i-0123456789abcdef0/20261122T101500Z-scale_in.tar.gz";

// ----- fixtures -----

/// Deterministic bytes that do not compress (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A log directory: a random log, a text log in a subdirectory, a symbolic link, and a file
/// whose name is not UTF-8. `big` adds that many random bytes in one more file.
fn logs(big: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.log"), noise(200 * 1024, 7)).unwrap();
    std::fs::create_dir(dir.path().join("nginx")).unwrap();
    std::fs::write(
        dir.path().join("nginx/access.log"),
        "GET / 200\n".repeat(5000),
    )
    .unwrap();
    std::os::unix::fs::symlink("app.log", dir.path().join("current.log")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.log");
    std::fs::write(dir.path().join(odd), b"not utf-8 named\n").unwrap();
    if big > 0 {
        std::fs::write(dir.path().join("big.log"), noise(big, 11)).unwrap();
    }
    dir
}

fn extras() -> Vec<ExtraEntry> {
    vec![ExtraEntry {
        path: "lifeguard/steps/01-stop-nginx.log".into(),
        data: b"nginx stopped\n".to_vec(),
    }]
}

fn drain(instance_id: &str) -> Value {
    json!({
        "instance_id": instance_id,
        "asg": "web",
        "reason": "scale_in",
        "started_at": "2026-11-22T10:15:00Z",
        "drain_started_at": "2026-11-22T10:15:02Z",
        "steps": [],
    })
}

fn spec(dir: &Path, compression: Packing) -> ArchiveSpec {
    ArchiveSpec {
        sources: vec![dir.to_string_lossy().into_owned()],
        exclude: Vec::new(),
        compression,
        max_total_bytes: None,
        max_file_bytes: None,
        max_files: DEFAULT_MAX_FILES,
    }
}

fn gzip() -> Packing {
    // Small members, so that the archive is a stream of many gzip members, as the agent's is.
    Packing::Gzip {
        level: 1,
        threads: 2,
        block_bytes: MIN_BLOCK_BYTES,
    }
}

fn zstd() -> Packing {
    Packing::Zstd {
        level: 1,
        threads: 0,
    }
}

/// The agent's archive of `dir`, in memory.
fn build(dir: &Path, compression: Packing) -> (Vec<u8>, ArchiveOutcome) {
    let mut out = Vec::new();
    let outcome = build_archive(
        &spec(dir, compression),
        &extras(),
        drain("i-0123456789abcdef0"),
        None,
        &mut out,
    )
    .unwrap();
    (out, outcome)
}

/// Entries the manifest lists: files, extras and links.
fn listed(outcome: &ArchiveOutcome) -> usize {
    outcome.manifest.files.len() + outcome.manifest.extras.len() + outcome.manifest.symlinks.len()
}

/// A plain tar with the entry named `drop` left out, everything else as it was.
fn without_entry(tar_bytes: &[u8], drop: &[u8]) -> Vec<u8> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut builder = tar::Builder::new(Vec::new());
    let mut dropped = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == drop {
            dropped = true;
            continue;
        }
        let header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        builder.append(&header, data.as_slice()).unwrap();
    }
    assert!(
        dropped,
        "{} is in the archive",
        String::from_utf8_lossy(drop)
    );
    builder.into_inner().unwrap()
}

fn entry_name(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes()[1..].to_vec()
}

fn manifest_of(outcome: &ArchiveOutcome) -> Value {
    parse_manifest(&outcome.manifest_json).unwrap()
}

fn scanned(archive: &[u8]) -> super::verify::Scanned {
    scan(archive, None).unwrap()
}

fn b64(raw: &[u8]) -> String {
    BASE64.encode(raw)
}

// ----- checksums -----

#[test]
fn each_algorithm_gives_its_catalogue_check_value() {
    // The check values of the CRC catalogue ("123456789") and FIPS 180's "abc".
    let check = b"123456789";
    assert_eq!(
        digest_of(Algorithm::Crc32, check),
        0xcbf4_3926u32.to_be_bytes()
    );
    assert_eq!(
        digest_of(Algorithm::Crc32c, check),
        0xe306_9283u32.to_be_bytes()
    );
    assert_eq!(
        digest_of(Algorithm::Crc64Nvme, check),
        0xae8b_1486_0a79_9888u64.to_be_bytes()
    );
    // S3's documented form of a CRC32C: base64 of the big-endian value.
    assert_eq!(b64(&digest_of(Algorithm::Crc32c, check)), "4waSgw==");
    assert_eq!(
        hex::encode(digest_of(Algorithm::Sha256, b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex::encode(digest_of(Algorithm::Sha512, b"abc")),
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
         2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    );
}

/// Feeds `data` to a digest in uneven chunks, as a download does.
fn digests(plan: Option<DigestPlan>, data: &[u8]) -> super::verify::ObjectDigests {
    let mut digest = ObjectDigest::new(plan);
    let mut sizes = [1usize, 7, 4096, 100_003, 3].into_iter().cycle();
    let mut rest = data;
    while !rest.is_empty() {
        let n = sizes.next().unwrap().min(rest.len());
        digest.update(&rest[..n]);
        rest = &rest[n..];
    }
    digest.finish()
}

#[test]
fn a_full_object_checksum_does_not_depend_on_how_the_bytes_come() {
    let data = noise(300_000, 3);
    for algorithm in [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64Nvme,
        Algorithm::Sha256,
        Algorithm::Sha512,
    ] {
        let result = digests(Some(DigestPlan::Full(algorithm)), &data);
        assert_eq!(
            result.s3,
            Some(Ok(b64(&digest_of(algorithm, &data)))),
            "{algorithm:?}"
        );
        assert_eq!(result.bytes, data.len() as u64);
        assert_eq!(result.sha256_hex, hex::encode(Sha256::digest(&data)));
    }
}

#[test]
fn composite_checksums_are_the_checksum_of_the_parts_checksums() {
    // Known values, computed independently (see the agent's upload checksum tests): a bitwise
    // CRC-32C in Python, and coreutils' sha256sum over the concatenated binary digests.
    let mut data = vec![b'a'; 5 * MIB];
    data.extend_from_slice(b"the last, short part");
    let sizes = vec![5 * MIB as u64, 20];
    let crc = digests(
        Some(DigestPlan::Composite(Algorithm::Crc32c, sizes.clone())),
        &data,
    );
    assert_eq!(crc.s3, Some(Ok("2dYVLQ==-2".to_string())));
    let sha = digests(
        Some(DigestPlan::Composite(Algorithm::Sha256, vec![3, 3])),
        b"abcdef",
    );
    assert_eq!(
        sha.s3,
        Some(Ok(
            "nATTAFe3VK8bLS1PVnV4LdYaWmWcNO5sKvR1JrZsr6Y=-2".to_string()
        ))
    );
    // Not the full-object checksum of the same bytes.
    assert_ne!(
        crc.s3,
        Some(Ok(b64(&digest_of(Algorithm::Crc32c, &data)) + "-2"))
    );
}

#[test]
fn bytes_that_do_not_fill_the_parts_are_no_composite_checksum() {
    let plan = || Some(DigestPlan::Composite(Algorithm::Crc32c, vec![4, 4]));
    let short = digests(plan(), b"abcdef");
    assert!(
        matches!(short.s3, Some(Err(ref why)) if why.contains("fewer")),
        "{short:?}"
    );
    let long = digests(plan(), b"abcdefghij");
    assert!(
        matches!(long.s3, Some(Err(ref why)) if why.contains("2 more")),
        "{long:?}"
    );
}

#[test]
fn a_suffix_or_the_type_makes_a_checksum_composite() {
    let composite = parse_stored(Algorithm::Crc32c, "2dYVLQ==-2", None);
    assert_eq!(
        composite,
        StoredChecksum {
            algorithm: Algorithm::Crc32c,
            digest: "2dYVLQ==".into(),
            composite: true,
            parts: Some(2),
        }
    );
    assert_eq!(
        parse_stored(Algorithm::Crc32c, "2dYVLQ==-2", Some("COMPOSITE")),
        composite
    );
    let full = parse_stored(Algorithm::Crc32c, "4waSgw==", Some("FULL_OBJECT"));
    assert!(!full.composite);
    assert_eq!(full.parts, None);
    // A store that leaves the `-N` out but says COMPOSITE.
    let bare = parse_stored(
        Algorithm::Sha256,
        "nATTAFe3VK8bLS1PVnV4LdYaWmWcNO5sKvR1JrZsr6Y=",
        Some("COMPOSITE"),
    );
    assert!(bare.composite);
    assert_eq!(bare.parts, None);
    // Base64 holds no `-`, but a digest of another form must not be taken for one.
    assert!(!parse_stored(Algorithm::Crc32, "abc-", None).composite);
    assert!(!parse_stored(Algorithm::Crc32, "abc-x1", None).composite);
}

#[test]
fn a_composite_checksum_needs_the_part_sizes() {
    let composite = Stored::Checksum(parse_stored(Algorithm::Crc32c, "AAAAAA==-3", None));
    assert_eq!(
        digest_plan(&composite, Some(Ok(vec![5, 5, 1]))),
        (
            Some(DigestPlan::Composite(Algorithm::Crc32c, vec![5, 5, 1])),
            None
        )
    );
    let (plan, why) = digest_plan(&composite, Some(Ok(vec![5, 1])));
    assert_eq!(plan, None);
    assert!(why.unwrap().contains("3 parts"));
    let (plan, why) = digest_plan(&composite, None);
    assert_eq!(plan, None);
    assert!(why.unwrap().contains("ETag"));
    let full = Stored::Checksum(parse_stored(Algorithm::Sha256, "AAAA", Some("FULL_OBJECT")));
    assert_eq!(
        digest_plan(&full, Some(Ok(vec![5, 5]))),
        (Some(DigestPlan::Full(Algorithm::Sha256)), None)
    );
    assert_eq!(digest_plan(&Stored::Absent, None), (None, None));
}

#[test]
fn etags_of_multipart_objects_give_their_part_count() {
    assert_eq!(
        etag_parts("\"d41d8cd98f00b204e9800998ecf8427e-12\""),
        Some(12)
    );
    assert_eq!(etag_parts("d41d8cd98f00b204e9800998ecf8427e-1"), Some(1));
    assert_eq!(etag_parts("\"d41d8cd98f00b204e9800998ecf8427e\""), None);
}

#[test]
fn checksum_problems_name_the_key_and_both_values() {
    let stored = Stored::Checksum(parse_stored(Algorithm::Crc32c, "2dYVLQ==-2", None));
    assert_eq!(
        checksum_problem(KEY, &stored, Some(&Ok("2dYVLQ==-2".into()))),
        None
    );
    let wrong = checksum_problem(KEY, &stored, Some(&Ok("AAAAAA==-2".into()))).unwrap();
    assert!(wrong.starts_with(KEY), "{wrong}");
    assert!(wrong.contains("composite CRC32C"), "{wrong}");
    assert!(
        wrong.contains("2dYVLQ==-2") && wrong.contains("AAAAAA==-2"),
        "{wrong}"
    );
    // A store that left the `-N` out of its report.
    let bare = Stored::Checksum(parse_stored(
        Algorithm::Crc32c,
        "2dYVLQ==",
        Some("COMPOSITE"),
    ));
    assert_eq!(
        checksum_problem(KEY, &bare, Some(&Ok("2dYVLQ==-2".into()))),
        None
    );

    let full = Stored::Checksum(parse_stored(Algorithm::Crc32c, "4waSgw==", None));
    assert_eq!(
        checksum_problem(KEY, &full, Some(&Ok("4waSgw==".into()))),
        None
    );
    let wrong = checksum_problem(KEY, &full, Some(&Ok("AAAAAA==".into()))).unwrap();
    assert!(wrong.contains("full-object CRC32C"), "{wrong}");

    let absent = checksum_problem(KEY, &Stored::Absent, None).unwrap();
    assert!(
        absent.starts_with(KEY) && absent.contains("no checksum"),
        "{absent}"
    );
    let sha1 = checksum_problem(KEY, &Stored::Unsupported("SHA-1"), None).unwrap();
    assert!(
        sha1.contains("SHA-1") && sha1.contains("unverified"),
        "{sha1}"
    );
}

// ----- the tar against the manifest -----

#[test]
fn the_agents_archives_match_their_manifests_in_every_compression() {
    let dir = logs(0);
    for compression in [gzip(), zstd(), Packing::None] {
        let (archive, outcome) = build(dir.path(), compression.clone());
        let scanned = scanned(&archive);
        assert_eq!(
            scanned.compression,
            match compression {
                Packing::Gzip { .. } => Compression::Gzip,
                Packing::Zstd { .. } => Compression::Zstd,
                Packing::None => Compression::None,
            }
        );
        assert_eq!(scanned.listing.error, None, "{compression:?}");
        assert_eq!(scanned.bytes, archive.len() as u64);
        assert_eq!(scanned.sha256_hex, hex::encode(Sha256::digest(&archive)));
        assert_eq!(
            scanned.listing.manifest.as_deref(),
            Some(outcome.manifest_json.as_slice())
        );
        assert_eq!(
            scanned.listing.manifest_sha256.as_deref(),
            Some(outcome.manifest_sha256.as_str())
        );
        let comparison = compare(KEY, &manifest_of(&outcome), &scanned.listing);
        assert_eq!(comparison.problems, Vec::<String>::new(), "{compression:?}");
        // app.log, nginx/access.log, the non-UTF-8 name; the step's output; current.log.
        assert_eq!(listed(&outcome), 5);
        assert_eq!(comparison.listed, 5);
        assert_eq!(comparison.found, 5);
    }
    // The gzip archive is many members, as the agent's parallel gzip writes it.
    let (archive, _) = build(dir.path(), gzip());
    let members = archive
        .windows(3)
        .filter(|w| w == &[0x1f, 0x8b, 0x08])
        .count();
    assert!(members > 3, "{members} gzip members");
}

#[test]
fn a_file_left_out_of_the_tar_is_named() {
    let dir = logs(0);
    let (archive, outcome) = build(dir.path(), Packing::None);
    let app = entry_name(&dir.path().join("app.log"));
    let damaged = without_entry(&archive, &app);
    let comparison = compare(KEY, &manifest_of(&outcome), &scanned(&damaged).listing);
    assert_eq!(comparison.listed, 5);
    assert_eq!(comparison.found, 4);
    assert_eq!(comparison.problems.len(), 1, "{:?}", comparison.problems);
    let problem = &comparison.problems[0];
    assert!(problem.starts_with(KEY), "{problem}");
    assert!(
        problem.contains(&String::from_utf8_lossy(&app).into_owned()),
        "{problem}"
    );
    assert!(problem.contains("no such entry"), "{problem}");
}

#[test]
fn a_non_utf8_name_is_matched_by_its_exact_bytes() {
    let dir = logs(0);
    let (archive, outcome) = build(dir.path(), Packing::None);
    let manifest = manifest_of(&outcome);
    let odd = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f.get("path_base64").is_some())
        .expect("the manifest gives the odd name's bytes");
    assert!(odd["path"].as_str().unwrap().contains('\u{fffd}'));
    // Left out of the tar: missed by its bytes, not by its lossy text.
    let odd_name = entry_name(&dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.log")));
    let damaged = without_entry(&archive, &odd_name);
    let comparison = compare(KEY, &manifest, &scanned(&damaged).listing);
    assert_eq!(comparison.found, 4);
    assert_eq!(comparison.problems.len(), 1, "{:?}", comparison.problems);
}

#[test]
fn entries_that_differ_from_the_manifest_are_named() {
    let dir = logs(0);
    let (archive, outcome) = build(dir.path(), gzip());
    let listing = scanned(&archive).listing;
    let mut manifest = manifest_of(&outcome);
    manifest["files"][0]["sha256"] = json!("00".repeat(32));
    manifest["extras"][0]["size"] = json!(1);
    manifest["symlinks"][0]["target"] = json!("elsewhere.log");
    let comparison = compare(KEY, &manifest, &listing);
    assert_eq!(comparison.listed, 5);
    assert_eq!(comparison.found, 2);
    let problems = comparison.problems.join("\n");
    assert_eq!(comparison.problems.len(), 3, "{problems}");
    assert!(problems.contains("SHA-256 000000000000…"), "{problems}");
    assert!(
        problems.contains("lifeguard/steps/01-stop-nginx.log in the archive holds 14 bytes"),
        "{problems}"
    );
    assert!(
        problems.contains("points to app.log, the manifest says elsewhere.log"),
        "{problems}"
    );
    assert!(comparison.problems.iter().all(|p| p.starts_with(KEY)));
}

#[test]
fn many_missing_entries_are_counted_rather_than_listed() {
    let files: Vec<Value> = (0..30)
        .map(|i| json!({"path": format!("/var/log/{i}.log"), "size": 1, "sha256": "00"}))
        .collect();
    let manifest = json!({"files": files, "extras": [], "symlinks": []});
    let comparison = compare(KEY, &manifest, &TarListing::default());
    assert_eq!((comparison.listed, comparison.found), (30, 0));
    assert_eq!(comparison.problems.len(), 21);
    assert!(
        comparison.problems[20].contains("10 more entries"),
        "{:?}",
        comparison.problems[20]
    );
}

#[test]
fn a_manifest_without_its_lists_is_a_problem() {
    let comparison = compare(KEY, &json!({"files": "none"}), &TarListing::default());
    assert_eq!(comparison.listed, 0);
    let problems = comparison.problems.join("\n");
    assert!(problems.contains("`files` is not a list"), "{problems}");
    assert!(problems.contains("no `extras` list"), "{problems}");
    assert!(parse_manifest(b"[1, 2]").is_err());
    assert!(parse_manifest(b"{\"files\": [").is_err());
}

#[test]
fn a_cut_archive_does_not_read_but_every_byte_is_hashed() {
    let dir = logs(0);
    let (archive, outcome) = build(dir.path(), gzip());
    let cut = &archive[..archive.len() / 2];
    let plan = Some(DigestPlan::Full(Algorithm::Crc32c));
    let scanned = scan(cut, plan).unwrap();
    assert!(scanned.listing.error.is_some());
    assert_eq!(scanned.listing.manifest, None);
    assert_eq!(scanned.bytes, cut.len() as u64);
    assert_eq!(scanned.sha256_hex, hex::encode(Sha256::digest(cut)));
    assert_eq!(
        scanned.s3,
        Some(Ok(b64(&digest_of(Algorithm::Crc32c, cut))))
    );
    let comparison = compare(KEY, &manifest_of(&outcome), &scanned.listing);
    assert!(comparison.found < comparison.listed);

    // Garbage after a whole archive is hashed too, and noticed.
    let mut trailing = archive.clone();
    trailing.extend_from_slice(b"not gzip at all");
    let scanned = scan(trailing.as_slice(), None).unwrap();
    assert_eq!(scanned.bytes, trailing.len() as u64);
    assert!(scanned.listing.error.is_some(), "{:?}", scanned.listing);
}

#[test]
fn a_failing_download_is_an_error_not_a_damaged_archive() {
    struct Failing(Vec<u8>);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }
    let dir = logs(0);
    let (archive, _) = build(dir.path(), gzip());
    let half = archive[..archive.len() / 2].to_vec();
    let error = scan(Failing(half), None).unwrap_err();
    assert!(error.to_string().contains("connection reset"), "{error}");
}

#[test]
fn links_and_other_entries_keep_their_kind() {
    let dir = logs(0);
    let (archive, _) = build(dir.path(), Packing::None);
    let listing = list_tar(archive.as_slice());
    let link = &listing.entries[&entry_name(&dir.path().join("current.log"))];
    assert_eq!(link.kind, EntryKind::Link);
    assert_eq!(link.link.as_deref(), Some(b"app.log".as_slice()));
    let app = &listing.entries[&entry_name(&dir.path().join("app.log"))];
    assert_eq!(app.kind, EntryKind::File);
    assert_eq!(app.size, 200 * 1024);
}

// ----- against the emulator -----

const BUCKET: &str = "fleet-logs";

async fn start() -> (Emulator, Clients, S3Store) {
    let emulator = Emulator::start().await;
    let clients = emulator.clients().await;
    clients
        .s3
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    let store = S3Store::new(clients.s3.clone());
    (emulator, clients, store)
}

fn policy() -> UploadPolicy {
    UploadPolicy::new(tokio::time::Instant::now() + Duration::from_secs(60))
}

fn object(key: &str, checksum: ChecksumKind) -> ObjectSpec {
    ObjectSpec {
        bucket: BUCKET.into(),
        key: key.into(),
        metadata: [("instance-id".to_string(), "i-0123456789abcdef0".to_string())].into(),
        content_type: "application/octet-stream".into(),
        sse: ServerSideEncryption::S3,
        expected_bucket_owner: None,
        checksum,
    }
}

fn archive_key(instance: &str, ext: &str) -> String {
    format!("lifeguard/web/{instance}/AROAEXAMPLE:{instance}/20261122T101500Z-scale_in.{ext}")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The sidecar as the agent stores it (`pack.rs`): the manifest's bytes, with both digests.
async fn put_sidecar(store: &S3Store, key: &str, archive_sha256: &str, outcome: &ArchiveOutcome) {
    let mut sidecar = object(&format!("{key}.manifest.json"), ChecksumKind::Crc32c);
    sidecar
        .metadata
        .insert("archive-sha256".into(), archive_sha256.into());
    sidecar
        .metadata
        .insert("manifest-sha256".into(), outcome.manifest_sha256.clone());
    store
        .put_object(
            &sidecar,
            Bytes::from(outcome.manifest_json.clone()),
            &policy(),
        )
        .await
        .unwrap();
}

/// An archive stored with one PutObject (a full-object checksum), and its sidecar.
async fn put_archive(store: &S3Store, key: &str, archive: &[u8], outcome: Option<&ArchiveOutcome>) {
    let receipt = store
        .put_object(
            &object(key, ChecksumKind::Crc32c),
            Bytes::from(archive.to_vec()),
            &policy(),
        )
        .await
        .unwrap();
    assert_eq!(receipt.parts, 1);
    if let Some(outcome) = outcome {
        put_sidecar(store, key, &receipt.sha256_hex, outcome).await;
    }
}

/// The agent's drain path: the archive built on a blocking thread into 5 MiB parts that the
/// store uploads as they come (a multipart upload with a composite checksum), then the sidecar.
async fn stream_archive(
    store: &S3Store,
    key: &str,
    dir: &Path,
    compression: Packing,
    checksum: ChecksumKind,
) -> (u32, ArchiveOutcome) {
    let (tx, rx) = part_channel(1);
    let spec = spec(dir, compression);
    let archiving = tokio::task::spawn_blocking(move || {
        let mut writer = PartWriter::new(tx, 5 * MIB);
        let outcome = build_archive(
            &spec,
            &extras(),
            drain("i-0123456789abcdef0"),
            None,
            &mut writer,
        )
        .unwrap();
        writer.finish().unwrap();
        outcome
    });
    let receipt = store
        .upload_stream(&object(key, checksum), rx, &policy())
        .await
        .unwrap();
    let outcome = archiving.await.unwrap();
    put_sidecar(store, key, &receipt.sha256_hex, &outcome).await;
    (receipt.parts, outcome)
}

fn assert_clean(checks: &[ArchiveCheck], key: &str, outcome: &ArchiveOutcome) {
    assert_eq!(checks.len(), 1, "{checks:#?}");
    let check = &checks[0];
    assert_eq!(check.key, key);
    assert_eq!(check.problems, Vec::<String>::new(), "{key}");
    assert!(check.is_clean());
    assert_eq!(check.files_listed, listed(outcome));
    assert_eq!(check.files_found, check.files_listed);
    assert!(check.uploaded_at.is_some());
    let manifest = check.manifest.as_ref().unwrap();
    assert_eq!(
        manifest["drain"]["drain_started_at"],
        "2026-11-22T10:15:02Z"
    );
    assert_eq!(manifest, &manifest_of(outcome));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_stored_as_the_agent_stores_them_verify_clean() {
    let (emulator, clients, store) = start().await;

    // One PutObject: a full-object CRC32C; gzip of many members.
    let small = logs(0);
    let (archive, outcome) = build(small.path(), gzip());
    let single = archive_key("i-0123456789abcdef0", "tar.gz");
    put_archive(&store, &single, &archive, Some(&outcome)).await;

    // Multipart, composite CRC32C, a plain tar of three parts.
    let big = logs(11 * MIB);
    let crc = archive_key("i-0aaaaaaaaaaaaaaa1", "tar");
    let (parts, crc_outcome) = stream_archive(
        &store,
        &crc,
        big.path(),
        Packing::None,
        ChecksumKind::Crc32c,
    )
    .await;
    assert_eq!(parts, 3);

    // Multipart, composite SHA-256, zstd.
    let sha = archive_key("i-0aaaaaaaaaaaaaaa2", "tar.zst");
    let (parts, sha_outcome) =
        stream_archive(&store, &sha, big.path(), zstd(), ChecksumKind::Sha256).await;
    assert_eq!(parts, 3);

    let checks = verify_archives(&clients.s3, BUCKET, "lifeguard/web/i-0123456789abcdef0/")
        .await
        .unwrap();
    assert_clean(&checks, &single, &outcome);
    assert_eq!(checks[0].bytes, archive.len() as u64);

    let heads_before = emulator.calls("s3", "HeadObject", None).await.len();
    let checks = verify_archives(&clients.s3, BUCKET, "lifeguard/web/i-0aaaaaaaaaaaaaaa1/")
        .await
        .unwrap();
    assert_clean(&checks, &crc, &crc_outcome);
    assert!(checks[0].bytes > 11 * MIB as u64);
    // The composite checksum was recomputed from the parts S3 reports, one HeadObject each.
    let heads = emulator.calls("s3", "HeadObject", None).await;
    let part_heads = heads[heads_before..]
        .iter()
        .filter(|call| call["params"]["query"]["partNumber"].is_string())
        .count();
    assert_eq!(part_heads, 3, "{heads:#?}");

    let checks = verify_archives(&clients.s3, BUCKET, "lifeguard/web/i-0aaaaaaaaaaaaaaa2")
        .await
        .unwrap();
    assert_clean(&checks, &sha, &sha_outcome);

    // No archive: an empty list. `i-01234567` is a prefix of the key of another instance,
    // which is not taken for this one's.
    for prefix in [
        "lifeguard/web/i-0bbbbbbbbbbbbbbb3/",
        "lifeguard/web/i-01234567",
    ] {
        let checks = verify_archives(&clients.s3, BUCKET, prefix).await.unwrap();
        assert_eq!(checks, Vec::new(), "{prefix}");
    }
}

/// Starts an upload of `key` as the agent does and leaves it open: two parts sent, no end.
fn open_upload(
    store: &S3Store,
    key: &str,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<bool>,
) {
    let (tx, rx) = part_channel(4);
    let store = store.clone();
    let object = object(key, ChecksumKind::Crc32c);
    let upload =
        tokio::spawn(async move { store.upload_stream(&object, rx, &policy()).await.is_ok() });
    (tx, upload)
}

fn one<'a>(checks: &'a [ArchiveCheck], key: &str) -> &'a ArchiveCheck {
    checks
        .iter()
        .find(|check| check.key == key)
        .unwrap_or_else(|| panic!("no check of {key} in {checks:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_archives_are_reported_by_key() {
    let (emulator, clients, store) = start().await;
    let dir = logs(0);
    let (archive, outcome) = build(dir.path(), gzip());
    let verify = |prefix: &'static str| {
        let s3 = clients.s3.clone();
        async move { verify_archives(&s3, BUCKET, prefix).await.unwrap() }
    };

    // 1. No manifest beside the archive: the one inside it stands in.
    let missing_manifest = archive_key("i-0000000000000000a", "tar.gz");
    put_archive(&store, &missing_manifest, &archive, None).await;
    let checks = verify("lifeguard/web/i-0000000000000000a/").await;
    let check = one(&checks, &missing_manifest);
    assert_eq!(
        check.problems,
        vec![format!(
            "{missing_manifest}: its manifest {missing_manifest}.manifest.json is missing"
        )]
    );
    assert_eq!(check.manifest.as_ref(), Some(&manifest_of(&outcome)));
    assert_eq!((check.files_listed, check.files_found), (5, 5));

    // 2. A file the manifest lists is not in the tar.
    let (plain, plain_outcome) = build(dir.path(), Packing::None);
    let app = entry_name(&dir.path().join("app.log"));
    let short = without_entry(&plain, &app);
    let missing_file = archive_key("i-0000000000000000b", "tar");
    store
        .put_object(
            &object(&missing_file, ChecksumKind::Sha256),
            Bytes::from(short.clone()),
            &policy(),
        )
        .await
        .unwrap();
    put_sidecar(&store, &missing_file, &sha256_hex(&short), &plain_outcome).await;
    let checks = verify("lifeguard/web/i-0000000000000000b/").await;
    let check = one(&checks, &missing_file);
    assert_eq!((check.files_listed, check.files_found), (5, 4));
    assert_eq!(check.problems.len(), 1, "{:?}", check.problems);
    assert!(check.problems[0].starts_with(&missing_file));
    assert!(
        check.problems[0].contains(&*String::from_utf8_lossy(&app)),
        "{:?}",
        check.problems
    );

    // 3. Bytes replaced: S3 holds the checksum of the archive, and other bytes. (S3 itself
    // refuses such a PutObject; the emulator stores the checksum it is given, which stands
    // for bytes damaged at rest or a store that failed to check.)
    let damaged_key = archive_key("i-0000000000000000c", "tar.gz");
    let mut damaged = archive.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    let stated = b64(&digest_of(Algorithm::Crc32c, &archive));
    clients
        .s3
        .put_object()
        .bucket(BUCKET)
        .key(&damaged_key)
        .checksum_algorithm("CRC32C".into())
        .checksum_crc32_c(&stated)
        .body(damaged.clone().into())
        .send()
        .await
        .unwrap();
    put_sidecar(&store, &damaged_key, &sha256_hex(&archive), &outcome).await;
    let checks = verify("lifeguard/web/i-0000000000000000c/").await;
    let check = one(&checks, &damaged_key);
    let problems = check.problems.join("\n");
    assert!(
        check.problems.iter().all(|p| p.starts_with(&damaged_key)),
        "{problems}"
    );
    assert!(
        problems.contains(&format!(
            "do not match the archive's full-object CRC32C checksum: S3 stores {stated}, the \
             bytes give {}",
            b64(&digest_of(Algorithm::Crc32c, &damaged))
        )),
        "{problems}"
    );
    assert!(problems.contains("archive-sha256"), "{problems}");
    assert_eq!(check.bytes, damaged.len() as u64);

    // 4. A multipart upload still open under an archive's key, and 5. one under a key that
    // has no object: the archive was never completed.
    let reuploaded = archive_key("i-0000000000000000d", "tar.gz");
    put_archive(&store, &reuploaded, &archive, Some(&outcome)).await;
    let never = archive_key("i-0000000000000000e", "tar.gz");
    let mut uploads = Vec::new();
    for key in [&reuploaded, &never] {
        let (tx, upload) = open_upload(&store, key);
        for seed in 0..2 {
            tx.send(Bytes::from(noise(5 * MIB, seed))).await.unwrap();
        }
        uploads.push((tx, upload));
    }
    eventually(
        "both multipart uploads open",
        Duration::from_secs(30),
        || {
            let emulator = &emulator;
            async move {
                let created = emulator.calls("s3", "CreateMultipartUpload", None).await;
                (created.len() >= 2).then_some(())
            }
        },
    )
    .await;
    let checks = verify("lifeguard/web/i-0000000000000000d/").await;
    let check = one(&checks, &reuploaded);
    assert_eq!(check.problems.len(), 1, "{:?}", check.problems);
    assert!(
        check.problems[0].starts_with(&format!("{reuploaded}: a multipart upload (")),
        "{:?}",
        check.problems
    );
    assert!(check.problems[0].contains("still open"));
    assert_eq!((check.files_listed, check.files_found), (5, 5));

    let checks = verify("lifeguard/web/i-0000000000000000e/").await;
    assert_eq!(checks.len(), 1, "{checks:#?}");
    let check = &checks[0];
    assert_eq!(check.key, never);
    assert_eq!((check.bytes, check.uploaded_at), (0, None));
    assert_eq!(check.problems.len(), 1, "{:?}", check.problems);
    assert!(
        check.problems[0].starts_with(&format!("{never}: the archive was never completed")),
        "{:?}",
        check.problems
    );
    for (tx, upload) in uploads {
        drop(tx);
        assert!(
            !upload.await.unwrap(),
            "a stream without its end is not stored"
        );
    }

    // 6. Only the manifest is stored.
    let lone = archive_key("i-0000000000000000f", "tar.gz");
    put_sidecar(&store, &lone, &sha256_hex(&archive), &outcome).await;
    let checks = verify("lifeguard/web/i-0000000000000000f/").await;
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0].key, lone);
    assert_eq!(
        checks[0].problems,
        vec![format!(
            "{lone}: the archive is missing; only its manifest {lone}.manifest.json is stored"
        )]
    );
    assert_eq!(checks[0].manifest.as_ref(), Some(&manifest_of(&outcome)));

    // 7. The controller's agentless archive (`tar czf` through Run Command): no manifest to
    // hold it against, which is said; its files are counted.
    let agentless = "lifeguard/web/i-00000000000000010/AROAEXAMPLE:i-00000000000000010/\
                     20261122T101500Z-agentless.tar.gz";
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in [
        ("var/log/app.log", &b"one\n"[..]),
        ("var/log/b.log", b"two\n"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, data).unwrap();
    }
    let tgz = tar.into_inner().unwrap().finish().unwrap();
    put_archive(&store, agentless, &tgz, None).await;
    let checks = verify("lifeguard/web/i-00000000000000010/").await;
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0].problems.len(), 1, "{:?}", checks[0].problems);
    assert!(
        checks[0].problems[0].starts_with(&format!("{agentless}: an agentless archive")),
        "{:?}",
        checks[0].problems
    );
    assert_eq!((checks[0].files_listed, checks[0].files_found), (0, 2));
    assert_eq!(checks[0].manifest, None);
}
