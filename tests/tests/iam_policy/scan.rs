//! Finding the AWS SDK operations a program calls: operation names from the SDK crates the
//! workspace locks, calls found by scanning the sources for them on SDK clients, and the IAM
//! actions AWS checks for each.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Program, workspace};

// ---------------------------------------------------------------------------------------------
// The SDK's operation names
// ---------------------------------------------------------------------------------------------

/// The snake_case operation names of every `aws-sdk-*` crate in Cargo.lock, by service
/// (`s3`, `autoscaling`, ...), read from the crates' `src/operation/` directories.
pub(crate) fn sdk_operations() -> BTreeMap<String, BTreeSet<String>> {
    let root = workspace();
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("read Cargo.lock");
    let mut versions = BTreeMap::new();
    for package in lock.split("[[package]]") {
        let field = |key: &str| {
            package.lines().find_map(|line| {
                line.strip_prefix(key)
                    .and_then(|rest| rest.trim().strip_prefix('='))
                    .map(|value| value.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(version)) = (field("name "), field("version "))
            && let Some(service) = name.strip_prefix("aws-sdk-")
        {
            versions.insert(service.to_string(), (name, version));
        }
    }
    assert!(!versions.is_empty(), "no aws-sdk-* crate in Cargo.lock");
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    for (service, (name, version)) in &versions {
        match registry_dir(name, version) {
            Some(dir) => {
                found.insert(service.clone(), operations_in(&dir));
            }
            None => missing.push((service.clone(), name.clone(), version.clone())),
        }
    }
    if !missing.is_empty() {
        // A fresh machine that built only part of the workspace may not have unpacked every
        // crate yet; cargo metadata fetches them and says where they are.
        let dirs = metadata_dirs();
        for (service, name, version) in missing {
            let dir = dirs
                .get(&(name.clone(), version.clone()))
                .unwrap_or_else(|| {
                    panic!("cannot find the sources of {name} {version} (run `cargo fetch`)")
                });
            found.insert(service, operations_in(dir));
        }
    }
    found
}

/// `$CARGO_HOME/registry/src/*/NAME-VERSION`, where cargo unpacks what it builds.
pub(crate) fn registry_dir(name: &str, version: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    let registries = std::fs::read_dir(home.join("registry").join("src")).ok()?;
    registries
        .filter_map(Result::ok)
        .map(|registry| registry.path().join(format!("{name}-{version}")))
        .find(|dir| dir.join("src").join("operation").is_dir())
}

/// Every package's directory, from `cargo metadata`.
pub(crate) fn metadata_dirs() -> BTreeMap<(String, String), PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let mut dirs = BTreeMap::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        if let (Some(name), Some(version), Some(manifest)) = (
            package["name"].as_str(),
            package["version"].as_str(),
            package["manifest_path"].as_str(),
        ) && let Some(dir) = Path::new(manifest).parent()
        {
            dirs.insert((name.to_string(), version.to_string()), dir.to_path_buf());
        }
    }
    dirs
}

pub(crate) fn operations_in(crate_dir: &Path) -> BTreeSet<String> {
    let dir = crate_dir.join("src").join("operation");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let operations: BTreeSet<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    assert!(!operations.is_empty(), "no operations in {}", dir.display());
    operations
}

// ---------------------------------------------------------------------------------------------
// Finding the calls
// ---------------------------------------------------------------------------------------------

/// One call of an SDK operation in the sources.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) service: String,
    pub(crate) operation: String,
    /// `file:line`, for messages.
    pub(crate) at: String,
    /// The builder chain from the operation to its `.send()` sets a version id (S3 then checks
    /// the `...Version` action).
    pub(crate) sets_version: bool,
    /// For `send_command`: the document named, when the source says it literally.
    pub(crate) document: Option<String>,
}

/// What the scan found: the calls, and calls it could not attribute to a client.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) calls: Vec<Call>,
    pub(crate) unresolved: Vec<String>,
}

/// Every `.rs` file under the program's source directories.
pub(crate) fn source_files(program: &Program) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in program.sources {
        walk(&workspace().join(dir), &mut files);
    }
    files.sort();
    files
}

pub(crate) fn scan_program(
    program: &Program,
    operations: &BTreeMap<String, BTreeSet<String>>,
) -> Scan {
    let root = workspace();
    let mut scan = Scan::default();
    for file in source_files(program) {
        let text = std::fs::read_to_string(&file).expect("read source");
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let found = scan_source(&name, &text, operations);
        scan.calls.extend(found.calls);
        scan.unresolved.extend(found.unresolved);
    }
    scan
}

pub(crate) fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The source with comments blanked out (same length and lines), so that an operation named in
/// a comment is not taken for a call. String and char literals are kept.
pub(crate) fn strip_comments(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        out[i] = b' ';
                        out[i + 1] = b' ';
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        out[i] = b' ';
                        out[i + 1] = b' ';
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if bytes[i] != b'\n' {
                            out[i] = b' ';
                        }
                        i += 1;
                    }
                }
            }
            b'"' => {
                // A raw string's hashes and an escaped quote both end elsewhere than the next
                // quote; skip to the real end so a `//` inside a URL stays text.
                let raw = i > 0 && (bytes[i - 1] == b'r' || bytes[i - 1] == b'#');
                let mut hashes = 0;
                let mut k = i;
                while raw && k > 0 && bytes[k - 1] == b'#' {
                    hashes += 1;
                    k -= 1;
                }
                i += 1;
                while i < bytes.len() {
                    if !raw && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == b'"' && bytes[i + 1..].iter().take(hashes).all(|b| *b == b'#') {
                        i += 1 + hashes;
                        break;
                    }
                    i += 1;
                }
            }
            b'\'' => {
                // A char literal ('"', '\'', '/'); a lifetime has no closing quote nearby.
                if bytes.get(i + 1) == Some(&b'\\') {
                    i += 4;
                } else if bytes.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8")
}

/// The identifier that ends just before `end` (skipping whitespace), and where it starts.
pub(crate) fn ident_before(bytes: &[u8], end: usize) -> Option<(usize, &str)> {
    let mut j = end;
    while j > 0 && bytes[j - 1].is_ascii_whitespace() {
        j -= 1;
    }
    let stop = j;
    while j > 0 && is_ident(bytes[j - 1]) {
        j -= 1;
    }
    (j < stop).then(|| (j, std::str::from_utf8(&bytes[j..stop]).unwrap_or("")))
}

pub(crate) fn ident_after(bytes: &[u8], start: usize) -> &str {
    let mut end = start;
    while end < bytes.len() && is_ident(bytes[end]) {
        end += 1;
    }
    std::str::from_utf8(&bytes[start..end]).unwrap_or("")
}

/// Which names stand for an SDK client of which service in this file: fields, parameters and
/// variables typed `aws_sdk_X::Client` (or `Client` imported from `aws_sdk_X`), and variables
/// bound to `aws_sdk_X::Client::new(..)`.
pub(crate) fn client_bindings(code: &str) -> BTreeMap<String, BTreeSet<String>> {
    let bytes = code.as_bytes();
    // `use aws_sdk_X::Client;` or `use aws_sdk_X::{..., Client, ...};` makes `Client` X's.
    let mut bare = None;
    for (at, _) in code.match_indices("use aws_sdk_") {
        let service = ident_after(bytes, at + "use aws_sdk_".len());
        let statement = &code[at..code[at..].find(';').map_or(code.len(), |end| at + end)];
        if statement
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word == "Client")
        {
            bare = Some(service.to_string());
        }
    }
    let mut bindings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (at, _) in code.match_indices("Client") {
        let after = at + "Client".len();
        if (at > 0 && is_ident(bytes[at - 1])) || bytes.get(after).is_some_and(|b| is_ident(*b)) {
            continue;
        }
        // The service: the path before `Client`, or the import.
        let (path_start, service) = if at >= 2 && &code[at - 2..at] == "::" {
            match ident_before(bytes, at - 2) {
                Some((start, segment)) if segment.starts_with("aws_sdk_") => {
                    (start, segment["aws_sdk_".len()..].to_string())
                }
                _ => continue,
            }
        } else {
            match &bare {
                Some(service) => (at, service.clone()),
                None => continue,
            }
        };
        // What it is bound to: `name: [&][mut ]<path>` or `name = <path>::new(..)`.
        let mut j = path_start;
        loop {
            while j > 0 && bytes[j - 1].is_ascii_whitespace() {
                j -= 1;
            }
            if j > 0 && bytes[j - 1] == b'&' {
                j -= 1;
            } else if j >= 3 && &code[j - 3..j] == "mut" && (j < 4 || !is_ident(bytes[j - 4])) {
                j -= 3;
            } else {
                break;
            }
        }
        let binds = j > 0
            && ((bytes[j - 1] == b':' && (j < 2 || bytes[j - 2] != b':'))
                || (bytes[j - 1] == b'=' && j >= 2 && !b"=!<>".contains(&bytes[j - 2])));
        if binds && let Some((_, name)) = ident_before(bytes, j - 1) {
            bindings
                .entry(name.to_string())
                .or_default()
                .insert(service.clone());
        }
    }
    bindings
}

/// The SDK calls in one file. A `.operation(` is a call when the name before it is bound to a
/// client of a service that has that operation; one whose receiver cannot be told but whose
/// name is an operation of an SDK crate the file uses is reported as unresolved, so that a
/// call the scan cannot attribute fails the test instead of escaping it.
pub(crate) fn scan_source(
    name: &str,
    source: &str,
    operations: &BTreeMap<String, BTreeSet<String>>,
) -> Scan {
    let code = strip_comments(source);
    let bytes = code.as_bytes();
    let bindings = client_bindings(&code);
    let used: BTreeSet<String> = code
        .match_indices("aws_sdk_")
        .filter(|(at, _)| *at == 0 || !is_ident(bytes[at - 1]))
        .map(|(at, _)| ident_after(bytes, at + "aws_sdk_".len()).to_string())
        .filter(|service| operations.contains_key(service))
        .collect();
    let line_of = |at: usize| code[..at].bytes().filter(|b| *b == b'\n').count() + 1;
    let mut scan = Scan::default();
    for (dot, _) in code.match_indices('.') {
        let method = ident_after(bytes, dot + 1);
        if method.is_empty()
            || !method.starts_with(|c: char| c.is_ascii_lowercase())
            || bytes.get(dot + 1 + method.len()) != Some(&b'(')
        {
            continue;
        }
        let receiver = ident_before(bytes, dot).map(|(_, receiver)| receiver);
        let services: Vec<&String> = receiver
            .and_then(|receiver| bindings.get(receiver))
            .into_iter()
            .flatten()
            .filter(|service| {
                operations
                    .get(*service)
                    .is_some_and(|ops| ops.contains(method))
            })
            .collect();
        let at = format!("{name}:{}", line_of(dot));
        match services.as_slice() {
            [service] => {
                // The builder chain up to its `.send()`.
                let chain_end = code[dot..]
                    .find(".send()")
                    .map_or(code.len(), |end| dot + end);
                let chain = &code[dot..chain_end];
                scan.calls.push(Call {
                    service: (*service).clone(),
                    operation: method.to_string(),
                    at,
                    sets_version: chain.contains("version_id("),
                    document: document_named(&code, chain),
                });
            }
            [] => {
                let known = used
                    .iter()
                    .any(|service| operations[service].contains(method));
                let bound = receiver.is_some_and(|receiver| bindings.contains_key(receiver));
                if known && !bound {
                    scan.unresolved.push(format!(
                        "{at}: `.{method}(` is an SDK operation, but the scan cannot tell which \
                         client it is called on; call it on a field, parameter or variable \
                         typed `aws_sdk_<service>::Client`"
                    ));
                }
            }
            _ => scan.unresolved.push(format!(
                "{at}: `.{method}(` is an operation of several clients bound to `{}`",
                receiver.unwrap_or_default()
            )),
        }
    }
    scan
}

/// The document a `send_command` chain names: a string literal, or a `const` of this file.
pub(crate) fn document_named(code: &str, chain: &str) -> Option<String> {
    let at = chain.find("document_name(")?;
    let argument = chain[at + "document_name(".len()..].trim_start();
    if let Some(rest) = argument.strip_prefix('"') {
        return rest.split('"').next().map(str::to_string);
    }
    let name: String = argument
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let declaration = format!("const {name}: &str = \"");
    let at = code.find(&declaration)?;
    code[at + declaration.len()..]
        .split('"')
        .next()
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Operations to IAM actions
// ---------------------------------------------------------------------------------------------

/// The IAM service prefix of an SDK crate.
pub(crate) fn iam_prefix(service: &str) -> Option<&'static str> {
    Some(match service {
        "autoscaling" => "autoscaling",
        "ec2" => "ec2",
        "elasticloadbalancingv2" => "elasticloadbalancing",
        "eventbridge" => "events",
        "s3" => "s3",
        "sqs" => "sqs",
        "ssm" => "ssm",
        "sts" => "sts",
        _ => return None,
    })
}

pub(crate) fn camel(operation: &str) -> String {
    operation
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The IAM actions AWS checks for a call. S3's names differ from its operations too often to
/// guess, so every S3 operation must be listed here (from the "Permissions" paragraph of each
/// operation in the Amazon S3 API Reference); SQS's batch operations use the single
/// operation's action; elsewhere the action is the operation's name.
pub(crate) fn iam_actions(call: &Call) -> Result<Vec<String>, String> {
    let prefix = iam_prefix(&call.service).ok_or_else(|| {
        format!(
            "{}: aws-sdk-{} has no IAM prefix in this test; add it to iam_prefix()",
            call.at, call.service
        )
    })?;
    let actions: Vec<&str> = match (call.service.as_str(), call.operation.as_str()) {
        ("s3", "put_object")
        | ("s3", "create_multipart_upload")
        | ("s3", "upload_part")
        | ("s3", "complete_multipart_upload") => vec!["PutObject"],
        ("s3", "abort_multipart_upload") => vec!["AbortMultipartUpload"],
        ("s3", "list_multipart_uploads") => vec!["ListBucketMultipartUploads"],
        ("s3", "list_parts") => vec!["ListMultipartUploadParts"],
        // "To use this operation, you must have READ access to the bucket" (s3:ListBucket).
        ("s3", "list_objects_v2") => vec!["ListBucket"],
        ("s3", "head_object") | ("s3", "get_object") if call.sets_version => {
            vec!["GetObject", "GetObjectVersion"]
        }
        ("s3", "head_object") | ("s3", "get_object") => vec!["GetObject"],
        ("s3", "delete_object") if call.sets_version => vec!["DeleteObject", "DeleteObjectVersion"],
        ("s3", "delete_object") => vec!["DeleteObject"],
        ("s3", operation) => {
            return Err(format!(
                "{}: S3 {operation} has no IAM mapping in this test; add it to iam_actions() \
                 from the S3 API Reference's Permissions paragraph",
                call.at
            ));
        }
        // "No permissions are required to perform this operation" (STS API Reference).
        ("sts", "get_caller_identity") => vec![],
        ("sqs", "delete_message_batch") => vec!["DeleteMessage"],
        ("sqs", "send_message_batch") => vec!["SendMessage"],
        ("sqs", "change_message_visibility_batch") => vec!["ChangeMessageVisibility"],
        _ => return Ok(vec![format!("{prefix}:{}", camel(&call.operation))]),
    };
    Ok(actions
        .into_iter()
        .map(|action| format!("{prefix}:{action}"))
        .collect())
}
