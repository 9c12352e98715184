//! The IAM policies in `packaging/iam/` grant what the code calls and nothing more.
//!
//! Each program's sources are scanned for calls on AWS SDK clients. The operation names come from
//! the SDK crates the workspace locks (`src/operation/<name>/` in each `aws-sdk-*` crate), so a
//! newly called operation is found even before anyone thinks of the policy. Each call is mapped
//! to the IAM action(s) AWS checks for it, and then:
//! - every action the code needs is allowed by the program's policy (or withheld on purpose,
//!   with the reason below);
//! - every action the policy allows is needed by a call (or by S3 on the caller's behalf);
//! - write actions are scoped: no `"Resource": "*"` except where AWS offers no resource-level
//!   permission, lifecycle actions only on managed groups, Run Command only through lifeguard's
//!   own document on managed instances, drain marks only as `lifeguard:drain:*` tags.
//!
//! No emulator: this reads files only.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A binary, the sources it is built from and the policy its role gets.
struct Program {
    name: &'static str,
    sources: &'static [&'static str],
    policy: &'static str,
}

const AGENT: Program = Program {
    name: "agent",
    sources: &["agent/src", "common/src"],
    policy: "packaging/iam/agent-policy.json",
};

const CONTROLLER: Program = Program {
    name: "controller",
    sources: &["controller/src", "common/src"],
    policy: "packaging/iam/controller-policy.json",
};

/// The group tag that marks a managed group (`groups.tag` in the controller's configuration;
/// `DEFAULT_MANAGED_TAG`). The policies key their conditions on it, on groups and, propagated
/// at launch, on their instances.
const MANAGED_TAG: &str = "lifeguard:managed";

/// The only SSM document the controller may run.
const ARCHIVE_DOCUMENT: &str = "lifeguard-ArchiveLogs";

/// The key prefix under which archives live (`upload.prefix`, and the agentless archive's key).
/// The agent's object permissions can be narrowed to it but not to its own instance's
/// `lifeguard/GROUP/INSTANCE/`: see `WITHHELD` for why no policy variable fits those keys.
const ARCHIVE_PREFIX: &str = "lifeguard/";

/// Actions AWS authorizes only on `"Resource": "*"`: their Service Authorization Reference rows
/// list no resource type ("Actions, resources, and condition keys for Amazon EC2 Auto Scaling /
/// Amazon EC2 / AWS Systems Manager").
const NO_RESOURCE_LEVEL: &[&str] = &[
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLifecycleHooks",
    "ec2:DescribeInstances",
    "ec2:DescribeTags",
    "ssm:GetCommandInvocation",
];

/// Actions no SDK call names but AWS checks on the caller's credentials on its behalf: with
/// SSE-KMS (`upload.sse = "kms"`) S3 asks KMS for a data key on PutObject and
/// CreateMultipartUpload, and to decrypt it when it assembles a multipart upload (S3 User
/// Guide, "Using server-side encryption with AWS KMS keys", permissions). Each is allowed only
/// when the program needs the action after it.
const ON_BEHALF: &[(&str, &str)] = &[
    ("kms:GenerateDataKey", "s3:PutObject"),
    ("kms:Decrypt", "s3:PutObject"),
];

/// Actions a call can need that the policy withholds on purpose. `DeleteObject` with a version
/// id (the agent removes the version it just uploaded when S3 reports another checksum) is
/// authorized as `s3:DeleteObjectVersion`, which erases a version for good. S3 has no condition
/// that ties an object key to the caller, and the archive keys carry the bare instance id, which
/// no policy variable yields (`${aws:userid}` is `ROLEID:i-...`, `${ec2:SourceInstanceARN}` a
/// whole ARN), so granting it would let any instance erase every other instance's archives. On
/// a versioned bucket the agent's clean-up is then refused, logged and reported
/// (`deleted: false`, `agent/src/upload/pipeline.rs`), and the bad version stays for an operator;
/// on an unversioned bucket `s3:DeleteObject` does the clean-up.
const WITHHELD: &[(&str, &str)] = &[("agent", "s3:DeleteObjectVersion")];

fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// The SDK's operation names
// ---------------------------------------------------------------------------------------------

/// The snake_case operation names of every `aws-sdk-*` crate in Cargo.lock, by service
/// (`s3`, `autoscaling`, ...), read from the crates' `src/operation/` directories.
fn sdk_operations() -> BTreeMap<String, BTreeSet<String>> {
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
fn registry_dir(name: &str, version: &str) -> Option<PathBuf> {
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
fn metadata_dirs() -> BTreeMap<(String, String), PathBuf> {
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

fn operations_in(crate_dir: &Path) -> BTreeSet<String> {
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
struct Call {
    service: String,
    operation: String,
    /// `file:line`, for messages.
    at: String,
    /// The builder chain from the operation to its `.send()` sets a version id (S3 then checks
    /// the `...Version` action).
    sets_version: bool,
    /// For `send_command`: the document named, when the source says it literally.
    document: Option<String>,
}

/// What the scan found: the calls, and calls it could not attribute to a client.
#[derive(Debug, Default)]
struct Scan {
    calls: Vec<Call>,
    unresolved: Vec<String>,
}

/// Every `.rs` file under the program's source directories.
fn source_files(program: &Program) -> Vec<PathBuf> {
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

fn scan_program(program: &Program, operations: &BTreeMap<String, BTreeSet<String>>) -> Scan {
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

fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The source with comments blanked out (same length and lines), so that an operation named in
/// a comment is not taken for a call. String and char literals are kept.
fn strip_comments(source: &str) -> String {
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
fn ident_before(bytes: &[u8], end: usize) -> Option<(usize, &str)> {
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

fn ident_after(bytes: &[u8], start: usize) -> &str {
    let mut end = start;
    while end < bytes.len() && is_ident(bytes[end]) {
        end += 1;
    }
    std::str::from_utf8(&bytes[start..end]).unwrap_or("")
}

/// Which names stand for an SDK client of which service in this file: fields, parameters and
/// variables typed `aws_sdk_X::Client` (or `Client` imported from `aws_sdk_X`), and variables
/// bound to `aws_sdk_X::Client::new(..)`.
fn client_bindings(code: &str) -> BTreeMap<String, BTreeSet<String>> {
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
fn scan_source(name: &str, source: &str, operations: &BTreeMap<String, BTreeSet<String>>) -> Scan {
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
fn document_named(code: &str, chain: &str) -> Option<String> {
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
fn iam_prefix(service: &str) -> Option<&'static str> {
    Some(match service {
        "autoscaling" => "autoscaling",
        "ec2" => "ec2",
        "eventbridge" => "events",
        "s3" => "s3",
        "sqs" => "sqs",
        "ssm" => "ssm",
        "sts" => "sts",
        _ => return None,
    })
}

fn camel(operation: &str) -> String {
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
fn iam_actions(call: &Call) -> Result<Vec<String>, String> {
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

// ---------------------------------------------------------------------------------------------
// The policies
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Statement {
    sid: String,
    actions: Vec<String>,
    resources: Vec<String>,
    condition: Value,
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The policy's statements. Only `Allow` with plain `Action` and `Resource` lists: `Deny`,
/// `NotAction` and `NotResource` are refused so that what is granted can be read off the lists.
fn load_policy(program: &Program) -> Vec<Statement> {
    let path = workspace().join(program.policy);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let policy: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", program.policy));
    assert_eq!(
        policy["Version"], "2012-10-17",
        "{}: policy version",
        program.policy
    );
    let statements = policy["Statement"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no Statement list", program.policy));
    statements
        .iter()
        .enumerate()
        .map(|(i, statement)| {
            let sid = statement["Sid"]
                .as_str()
                .map_or_else(|| format!("#{i}"), str::to_string);
            for key in ["NotAction", "NotResource", "NotPrincipal", "Principal"] {
                assert!(
                    statement.get(key).is_none(),
                    "{}: statement {sid} uses {key}",
                    program.policy
                );
            }
            assert_eq!(
                statement["Effect"], "Allow",
                "{}: statement {sid}",
                program.policy
            );
            let actions = strings(&statement["Action"]);
            let resources = strings(&statement["Resource"]);
            assert!(
                !actions.is_empty() && !resources.is_empty(),
                "{}: statement {sid} needs Action and Resource",
                program.policy
            );
            for action in &actions {
                assert!(
                    !action.contains('*') && !action.contains('?'),
                    "{}: statement {sid} grants the wildcard action {action}",
                    program.policy
                );
            }
            Statement {
                sid,
                actions,
                resources,
                condition: statement["Condition"].clone(),
            }
        })
        .collect()
}

fn granted(statements: &[Statement]) -> BTreeSet<String> {
    statements
        .iter()
        .flat_map(|s| s.actions.iter().cloned())
        .collect()
}

/// The actions a program's calls need, each with the calls that need it.
fn needed(program: &Program) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let operations = sdk_operations();
    let scan = scan_program(program, &operations);
    let mut problems = scan.unresolved;
    let mut needs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for call in &scan.calls {
        match iam_actions(call) {
            Ok(actions) => {
                for action in actions {
                    needs
                        .entry(action)
                        .or_default()
                        .push(format!("{} {} ({})", call.service, call.operation, call.at));
                }
            }
            Err(problem) => problems.push(problem),
        }
    }
    (needs, problems)
}

fn check_grants_match_calls(program: &Program) {
    let (needs, mut problems) = needed(program);
    assert!(
        !needs.is_empty(),
        "the scan found no SDK call in {:?}: the scanner is broken",
        program.sources
    );
    let statements = load_policy(program);
    let grants = granted(&statements);
    let withheld: BTreeSet<&str> = WITHHELD
        .iter()
        .filter(|(who, _)| *who == program.name)
        .map(|(_, action)| *action)
        .collect();
    for (action, calls) in &needs {
        if withheld.contains(action.as_str()) {
            if grants.contains(action) {
                problems.push(format!(
                    "{} grants {action}, which is withheld on purpose (see WITHHELD)",
                    program.policy
                ));
            }
        } else if !grants.contains(action) {
            problems.push(format!(
                "the {} calls {} and needs {action}, which {} does not grant",
                program.name,
                calls.join(", "),
                program.policy
            ));
        }
    }
    for action in &grants {
        let on_behalf = ON_BEHALF
            .iter()
            .any(|(granted, after)| granted == action && needs.contains_key(*after));
        if !needs.contains_key(action) && !on_behalf {
            problems.push(format!(
                "{} grants {action}, which no call in {} needs",
                program.policy,
                program.sources.join(" + ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} policy and code disagree:\n  {}",
        program.name,
        problems.join("\n  ")
    );
}

/// Whether a condition key appears in the statement's condition, under an operator whose name
/// contains `operator` (`Null`, `StringNotEquals`, ...), with `value` among its values.
fn has_condition(statement: &Statement, operator: &str, key: &str, value: &str) -> bool {
    statement
        .condition
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(op, _)| op.contains(operator))
        .filter_map(|(_, keys)| keys.as_object())
        .flat_map(|keys| keys.iter())
        .any(|(k, v)| k.eq_ignore_ascii_case(key) && strings(v).iter().any(|s| s == value))
}

/// The statement allows only resources carrying the managed tag with a value other than `false`
/// (what `ControllerConfig::manages` accepts): the tag must exist, since a negated operator is
/// true for a missing key.
fn requires_managed_tag(statement: &Statement, key_prefix: &str) -> bool {
    let key = format!("{key_prefix}/{MANAGED_TAG}");
    has_condition(statement, "Null", &key, "false")
        && has_condition(statement, "StringNotEquals", &key, "false")
}

/// Lifecycle actions only on groups, and only on managed ones.
fn lifecycle_scoped(statement: &Statement) -> bool {
    statement
        .resources
        .iter()
        .all(|r| r.starts_with("arn:aws:autoscaling:") && r.contains(":autoScalingGroup:"))
        && requires_managed_tag(statement, "autoscaling:ResourceTag")
}

/// The shape checks, for one policy: what each write action may touch.
fn scope_problems(program: &Program) -> Vec<String> {
    let statements = load_policy(program);
    let mut problems = Vec::new();
    let mut document_statements = 0;
    for statement in &statements {
        let sid = &statement.sid;
        let wide = statement.resources.iter().any(|r| r == "*");
        if wide {
            for action in &statement.actions {
                if !NO_RESOURCE_LEVEL.contains(&action.as_str()) {
                    problems.push(format!(
                        "{sid}: {action} on \"Resource\": \"*\", but AWS can scope it"
                    ));
                }
            }
        }
        for action in &statement.actions {
            match action.as_str() {
                "autoscaling:CompleteLifecycleAction"
                | "autoscaling:RecordLifecycleActionHeartbeat"
                    if !lifecycle_scoped(statement) =>
                {
                    problems.push(format!(
                        "{sid}: {action} must be on autoScalingGroup ARNs with \
                         autoscaling:ResourceTag/{MANAGED_TAG} present and not \"false\""
                    ));
                }
                "ssm:SendCommand" => {
                    for resource in &statement.resources {
                        if resource.contains(":document/") {
                            document_statements += 1;
                            if !resource.starts_with("arn:aws:ssm:")
                                || !resource.ends_with(&format!(":document/{ARCHIVE_DOCUMENT}"))
                            {
                                problems.push(format!(
                                    "{sid}: SendCommand may run only the {ARCHIVE_DOCUMENT} \
                                     document, not {resource}"
                                ));
                            }
                        } else if resource.starts_with("arn:aws:ec2:")
                            && resource.contains(":instance/")
                        {
                            if !requires_managed_tag(statement, "ssm:resourceTag")
                                && !requires_managed_tag(statement, "aws:ResourceTag")
                            {
                                problems.push(format!(
                                    "{sid}: SendCommand on {resource} without the condition \
                                     that the instance carries {MANAGED_TAG}"
                                ));
                            }
                        } else {
                            problems.push(format!(
                                "{sid}: SendCommand on {resource}: only the {ARCHIVE_DOCUMENT} \
                                 document and managed instances"
                            ));
                        }
                    }
                }
                "ec2:CreateTags" => {
                    let keys_limited = statement
                        .condition
                        .get("ForAllValues:StringLike")
                        .and_then(|keys| keys.get("aws:TagKeys"))
                        .map(strings)
                        .is_some_and(|keys| {
                            !keys.is_empty()
                                && keys.iter().all(|key| key.starts_with("lifeguard:drain:"))
                        });
                    let keys_present = has_condition(statement, "Null", "aws:TagKeys", "false");
                    if !keys_limited
                        || !keys_present
                        || !requires_managed_tag(statement, "aws:ResourceTag")
                        || statement
                            .resources
                            .iter()
                            .any(|r| !r.starts_with("arn:aws:ec2:") || !r.contains(":instance/"))
                    {
                        problems.push(format!(
                            "{sid}: ec2:CreateTags must be on instances carrying {MANAGED_TAG}, \
                             for lifeguard:drain:* keys only"
                        ));
                    }
                }
                action if action.starts_with("s3:") => {
                    for resource in &statement.resources {
                        let Some(path) = resource.strip_prefix("arn:aws:s3:::") else {
                            problems.push(format!("{sid}: {action} on {resource}"));
                            continue;
                        };
                        let object = path.split_once('/').map(|(_, key)| key);
                        let bucket_level = action == "s3:ListBucketMultipartUploads";
                        let scoped = match object {
                            None => bucket_level,
                            Some(key) => !bucket_level && key.starts_with(ARCHIVE_PREFIX),
                        };
                        if !scoped {
                            problems.push(format!(
                                "{sid}: {action} on {resource}: objects only under \
                                 {ARCHIVE_PREFIX}, bucket listing only on the bucket"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if granted(&statements).contains("ssm:SendCommand") && document_statements == 0 {
        problems.push(format!(
            "SendCommand without its {ARCHIVE_DOCUMENT} document resource"
        ));
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn agent_policy_grants_exactly_what_the_agent_calls() {
    check_grants_match_calls(&AGENT);
}

#[test]
fn controller_policy_grants_exactly_what_the_controller_calls() {
    check_grants_match_calls(&CONTROLLER);
}

#[test]
fn policies_scope_every_write() {
    let mut problems = Vec::new();
    for program in [&AGENT, &CONTROLLER] {
        problems.extend(
            scope_problems(program)
                .into_iter()
                .map(|p| format!("{}: {p}", program.policy)),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The controller runs Run Command only through the document its policy names.
#[test]
fn controller_sends_commands_only_through_the_archive_document() {
    let operations = sdk_operations();
    let scan = scan_program(&CONTROLLER, &operations);
    let sends: Vec<&Call> = scan
        .calls
        .iter()
        .filter(|c| c.service == "ssm" && c.operation == "send_command")
        .collect();
    assert!(!sends.is_empty(), "the scan found no SendCommand call");
    for call in sends {
        // A name read from configuration (`agentless.document`) cannot be checked here; the
        // policy's document resource is what holds it at run time (policies_scope_every_write).
        if let Some(document) = &call.document {
            assert_eq!(
                document, ARCHIVE_DOCUMENT,
                "{}: SendCommand runs {document}, which {} does not allow",
                call.at, CONTROLLER.policy
            );
        }
    }
    // AWS's own shell documents run whatever they are given as root: no source may name one.
    for file in source_files(&CONTROLLER) {
        let code = strip_comments(&std::fs::read_to_string(&file).expect("read source"));
        for document in ["\"AWS-RunShellScript\"", "\"AWS-RunPowerShellScript\""] {
            assert!(
                !code.contains(document),
                "{} names {document}: the controller may run only {ARCHIVE_DOCUMENT}",
                file.display()
            );
        }
    }
}

/// The scanner itself: split builder chains, imported and fully qualified client types,
/// comments, receivers it cannot attribute.
#[test]
fn scanner_attributes_calls_to_their_clients() {
    let operations: BTreeMap<String, BTreeSet<String>> = [
        (
            "s3",
            &[
                "put_object",
                "head_object",
                "delete_object",
                "describe_tags",
            ][..],
        ),
        ("ec2", &["create_tags", "describe_tags"][..]),
    ]
    .into_iter()
    .map(|(service, ops)| {
        (
            service.to_string(),
            ops.iter().map(|op| op.to_string()).collect(),
        )
    })
    .collect();
    let source = r#"
        use aws_sdk_s3::Client;
        struct Store { client: Client, ec2: aws_sdk_ec2::Client }
        // self.client.delete_object() is only mentioned here
        /* and .create_tags( here */
        impl Store {
            async fn go(&self, other: &Thing) {
                let url = "https://example.com/x"; self.client.put_object().send().await;
                let mut call = self.ec2.create_tags().resources("i-1");
                call.send().await;
                self.ec2.describe_tags().send().await;
                self.client
                    .head_object()
                    .set_version_id(v)
                    .send()
                    .await;
                other.thing().put_object();
            }
        }
    "#;
    let scan = scan_source("x.rs", source, &operations);
    let found: Vec<(String, String, bool)> = scan
        .calls
        .iter()
        .map(|c| (c.service.clone(), c.operation.clone(), c.sets_version))
        .collect();
    let expected = [
        ("s3", "put_object", false),
        ("ec2", "create_tags", false),
        ("ec2", "describe_tags", false),
        ("s3", "head_object", true),
    ]
    .map(|(s, o, v)| (s.to_string(), o.to_string(), v));
    assert_eq!(found, expected);
    assert_eq!(scan.unresolved.len(), 1, "{:?}", scan.unresolved);
    assert!(scan.unresolved[0].contains("put_object"));
}
