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

/// The SSM document the controller runs on managed instances (the agentless archive).
const ARCHIVE_DOCUMENT: &str = "lifeguard-ArchiveLogs";

/// The SSM document that patches image builders (AWS's own; an AWS-owned document's ARN has
/// no account id).
const PATCH_DOCUMENT: &str = "AWS-RunPatchBaseline";

/// The tag on image builders: the controller may patch, stop and terminate only them.
const BUILDER_TAG: &str = "lifeguard:image:builder";

/// The key prefix under which archives live (`upload.prefix`, and the agentless archive's key).
const ARCHIVE_PREFIX: &str = "lifeguard/";

/// The agent's archive objects: each instance writes only beneath the key level named after its
/// own role session (`{principal}` in `upload.key_template`, `ROLEID:i-…`), the one part of a key
/// a policy variable can tie to the caller.
const AGENT_OBJECTS: &str = "lifeguard/*/${aws:userid}/*";

/// Actions AWS authorizes only on `"Resource": "*"`: their Service Authorization Reference rows
/// list no resource type ("Actions, resources, and condition keys for Amazon EC2 Auto Scaling /
/// Amazon EC2 / AWS Systems Manager").
const NO_RESOURCE_LEVEL: &[&str] = &[
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLifecycleHooks",
    "ec2:DescribeInstances",
    "ec2:DescribeTags",
    "ec2:DescribeImages",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeSnapshots",
    "autoscaling:DescribeInstanceRefreshes",
    "autoscaling:DescribeLaunchConfigurations",
    "ssm:GetCommandInvocation",
    "ssm:ListCommands",
    "ssm:ListCommandInvocations",
    // ELBv2's Describe actions have no resource types (Service Authorization Reference).
    "elasticloadbalancing:DescribeTargetHealth",
];

/// Actions no SDK call names but AWS checks on the caller's credentials on its behalf: with
/// SSE-KMS (`upload.sse = "kms"`) S3 asks KMS for a data key on PutObject and
/// CreateMultipartUpload, and to decrypt it when it assembles a multipart upload (S3 User
/// Guide, "Using server-side encryption with AWS KMS keys", permissions). Each is allowed only
/// when the program needs the action after it.
const ON_BEHALF: &[(&str, &str)] = &[
    ("kms:GenerateDataKey", "s3:PutObject"),
    ("kms:Decrypt", "s3:PutObject"),
    // A drill reading an SSE-KMS archive back: S3 decrypts it with the reader's credentials.
    ("kms:Decrypt", "s3:GetObject"),
    // "ec2:RunInstances [is] checked when an Auto Scaling group is created or updated using a
    // launch template", and iam:PassRole when the template names an instance profile (Auto
    // Scaling User Guide, "Amazon EC2 Auto Scaling API permissions").
    ("ec2:RunInstances", "autoscaling:UpdateAutoScalingGroup"),
    ("iam:PassRole", "autoscaling:UpdateAutoScalingGroup"),
    // A builder launched from a template with an instance profile passes its role (EC2 User
    // Guide, "IAM role for EC2": iam:PassRole).
    ("iam:PassRole", "ec2:RunInstances"),
    // A launch configuration that names an instance profile passes its role.
    ("iam:PassRole", "autoscaling:CreateLaunchConfiguration"),
];

/// Actions a call can need that the policy withholds on purpose: none today. (`DeleteObject`
/// with a version id, `s3:DeleteObjectVersion`, was withheld while any instance could reach every
/// archive key; confined to its own `${aws:userid}` level, an instance can erase only a version
/// it wrote itself, which its checksum clean-up needs on a versioned bucket.)
const WITHHELD: &[(&str, &str)] = &[];

fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

#[path = "iam_policy/scan.rs"]
mod scan;

use scan::{
    Call, iam_actions, scan_program, scan_source, sdk_operations, source_files, strip_comments,
};

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
                            let named = [ARCHIVE_DOCUMENT, PATCH_DOCUMENT]
                                .iter()
                                .any(|d| resource.ends_with(&format!(":document/{d}")));
                            if !resource.starts_with("arn:aws:ssm:") || !named {
                                problems.push(format!(
                                    "{sid}: SendCommand may run only the {ARCHIVE_DOCUMENT} and \
                                     {PATCH_DOCUMENT} documents, not {resource}"
                                ));
                            }
                        } else if resource.starts_with("arn:aws:ec2:")
                            && resource.contains(":instance/")
                        {
                            let builders = has_condition(
                                statement,
                                "Null",
                                &format!("ssm:resourceTag/{BUILDER_TAG}"),
                                "false",
                            );
                            if !requires_managed_tag(statement, "ssm:resourceTag")
                                && !requires_managed_tag(statement, "aws:ResourceTag")
                                && !builders
                            {
                                problems.push(format!(
                                    "{sid}: SendCommand on {resource} without the condition \
                                     that the instance carries {MANAGED_TAG} or {BUILDER_TAG}"
                                ));
                            }
                        } else {
                            problems.push(format!(
                                "{sid}: SendCommand on {resource}: only named documents, \
                                 managed instances and image builders"
                            ));
                        }
                    }
                }
                "autoscaling:CreateLaunchConfiguration"
                | "autoscaling:DeleteLaunchConfiguration"
                    if !statement.resources.iter().all(|r| {
                        r.starts_with("arn:aws:autoscaling:")
                            && r.ends_with(":launchConfigurationName/*-lifeguard-*")
                    }) =>
                {
                    problems.push(format!(
                        "{sid}: {action} only of lifeguard's copies (named *-lifeguard-*)"
                    ));
                }
                // The image pipeline's and the swap's records: only their own keys, only
                // on managed groups; the swap also deletes its record.
                "autoscaling:CreateOrUpdateTags" | "autoscaling:DeleteTags"
                    if !lifecycle_scoped(statement)
                        || !has_condition(statement, "Null", "aws:TagKeys", "false")
                        || !["lifeguard:image:*", "lifeguard:swap:*"]
                            .iter()
                            .any(|keys| {
                                has_condition(
                                    statement,
                                    "ForAllValues:StringLike",
                                    "aws:TagKeys",
                                    keys,
                                )
                            })
                        || (action == "autoscaling:DeleteTags"
                            && !has_condition(
                                statement,
                                "ForAllValues:StringLike",
                                "aws:TagKeys",
                                "lifeguard:swap:*",
                            )) =>
                {
                    problems.push(format!(
                        "{sid}: {action} only as lifeguard:image:* or (deleted too) \
                         lifeguard:swap:* tags on groups carrying {MANAGED_TAG}"
                    ));
                }
                "ec2:StopInstances" | "ec2:TerminateInstances"
                    if !has_condition(
                        statement,
                        "Null",
                        &format!("aws:ResourceTag/{BUILDER_TAG}"),
                        "false",
                    ) || !only_resources(statement, &[":instance/"]) =>
                {
                    problems.push(format!(
                        "{sid}: {action} only of image builders (instances tagged {BUILDER_TAG})"
                    ));
                }
                "ec2:CreateTags" => {
                    if let Some(problem) = create_tags_problem(statement) {
                        problems.push(format!("{sid}: {problem}"));
                    }
                }
                "ec2:CreateLaunchTemplateVersion"
                | "ec2:ModifyLaunchTemplate"
                | "ec2:DeleteLaunchTemplateVersions"
                    if !requires_managed_tag(statement, "aws:ResourceTag")
                        || !only_resources(statement, &[":launch-template/"]) =>
                {
                    problems.push(format!(
                        "{sid}: {action} only on launch templates carrying {MANAGED_TAG}"
                    ));
                }
                "ec2:DeregisterImage" | "ec2:DeleteSnapshot"
                    if !has_condition(
                        statement,
                        "Null",
                        "aws:ResourceTag/lifeguard:image:template",
                        "false",
                    ) || !only_resources(statement, &[":image/", ":snapshot/"]) =>
                {
                    problems.push(format!(
                        "{sid}: {action} only on images and snapshots lifeguard's pipeline \
                         made (tagged lifeguard:image:template)"
                    ));
                }
                "autoscaling:UpdateAutoScalingGroup"
                | "autoscaling:StartInstanceRefresh"
                | "autoscaling:TerminateInstanceInAutoScalingGroup"
                    if !lifecycle_scoped(statement) =>
                {
                    problems.push(format!(
                        "{sid}: {action} only on groups carrying {MANAGED_TAG}"
                    ));
                }
                "ec2:RunInstances" => {
                    let from_managed_template = statement
                        .condition
                        .get("ArnLike")
                        .and_then(|c| c.get("ec2:LaunchTemplate"))
                        .is_some();
                    let template_resources_only =
                        has_condition(statement, "Bool", "ec2:IsLaunchTemplateResource", "true");
                    // A builder may be placed in a subnet the template does not name.
                    let placement_only =
                        only_resources(statement, &[":subnet/", ":network-interface/"]);
                    if !from_managed_template || !(template_resources_only || placement_only) {
                        problems.push(format!(
                            "{sid}: ec2:RunInstances only through a launch template \
                             (ec2:LaunchTemplate), with the template's resources \
                             (ec2:IsLaunchTemplateResource) or a subnet"
                        ));
                    }
                }
                "iam:PassRole"
                    if !has_condition(
                        statement,
                        "StringEquals",
                        "iam:PassedToService",
                        "ec2.amazonaws.com",
                    ) || statement.resources.iter().any(|r| r.contains('*')) =>
                {
                    problems.push(format!("{sid}: iam:PassRole only of named roles, to EC2"));
                }
                "ec2:CreateImage"
                    if statement.resources.iter().any(|r| r.contains(":instance/"))
                        && !requires_managed_tag(statement, "aws:ResourceTag") =>
                {
                    problems.push(format!(
                        "{sid}: CreateImage only of instances carrying {MANAGED_TAG}"
                    ));
                }
                action if action.starts_with("s3:") => {
                    for resource in &statement.resources {
                        let Some(path) = resource.strip_prefix("arn:aws:s3:::") else {
                            problems.push(format!("{sid}: {action} on {resource}"));
                            continue;
                        };
                        let object = path.split_once('/').map(|(_, key)| key);
                        let bucket_level =
                            matches!(action, "s3:ListBucketMultipartUploads" | "s3:ListBucket");
                        let wanted = if program.name == "agent" {
                            AGENT_OBJECTS
                        } else {
                            ARCHIVE_PREFIX
                        };
                        let scoped = match object {
                            None => bucket_level,
                            Some(key) if program.name == "agent" => {
                                !bucket_level && key == AGENT_OBJECTS
                            }
                            Some(key) => !bucket_level && key.starts_with(ARCHIVE_PREFIX),
                        };
                        if !scoped {
                            problems.push(format!(
                                "{sid}: {action} on {resource}: objects only as {wanted}, \
                                 bucket listing only on the bucket"
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

/// IAM's resource matching: `*` any run of characters (`/` included), `?` any one.
fn arn_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer glob with backtracking to the last `*`.
    let (mut p, mut t, mut star, mut resume) = (0, 0, None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            resume = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            resume += 1;
            t = resume;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// An instance's credentials can write its own archives and no other instance's: the keys are
/// those `upload.key_template`'s default and the agentless document make, `${aws:userid}` is
/// what AWS substitutes for an instance role session.
#[test]
fn an_instance_can_write_only_its_own_archives() {
    let statements = load_policy(&AGENT);
    let can = |action: &str, userid: &str, key: &str| {
        statements.iter().any(|s| {
            s.actions.iter().any(|a| a == action)
                && s.resources.iter().any(|r| {
                    let resource = r.replace("${aws:userid}", userid);
                    arn_matches(&resource, &format!("arn:aws:s3:::example-fleet-logs/{key}"))
                })
        })
    };
    let me = "AROAEXAMPLEROLEID:i-0aaaaaaaaaaaaaaaa";
    let other = "AROAEXAMPLEROLEID:i-0bbbbbbbbbbbbbbbb";
    let own = [
        format!("lifeguard/web/i-0aaaaaaaaaaaaaaaa/{me}/20261122T101500Z-scale_in.tar.gz"),
        format!("lifeguard/web/i-0aaaaaaaaaaaaaaaa/{me}/20261122T101500Z-agentless.tar.gz"),
    ];
    let theirs = [
        format!("lifeguard/web/i-0bbbbbbbbbbbbbbbb/{other}/20261122T101500Z-scale_in.tar.gz"),
        "lifeguard/web/i-0bbbbbbbbbbbbbbbb/20261122T101500Z-scale_in.tar.gz".to_string(),
        format!("other/{me}/x.tar.gz"),
        format!("{me}/x.tar.gz"),
    ];
    for action in [
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
    ] {
        for key in &own {
            assert!(can(action, me, key), "{action} refused on its own {key}");
        }
        for key in &theirs {
            assert!(
                !can(action, me, key),
                "{action} allowed on {key}, not its own"
            );
        }
    }
    assert!(arn_matches("a*c?e", "abbbcde") && !arn_matches("a*c?e", "abbbce"));
}

/// Whether every resource of the statement is an EC2 ARN of one of `kinds` (`:instance/`…).
fn only_resources(statement: &Statement, kinds: &[&str]) -> bool {
    statement
        .resources
        .iter()
        .all(|r| r.starts_with("arn:aws:ec2:") && kinds.iter().any(|k| r.contains(k)))
}

/// Tags are written in four shapes only: drain marks on managed instances, the image
/// pipeline's record on managed launch templates, and the pipeline's tags on the images and
/// snapshots it creates, at creation.
fn create_tags_problem(statement: &Statement) -> Option<String> {
    let keys: Vec<String> = statement
        .condition
        .get("ForAllValues:StringLike")
        .and_then(|keys| keys.get("aws:TagKeys"))
        .map(strings)
        .unwrap_or_default();
    let keys_under = |prefix: &str| !keys.is_empty() && keys.iter().all(|k| k.starts_with(prefix));
    if !has_condition(statement, "Null", "aws:TagKeys", "false") {
        return Some("ec2:CreateTags without the condition that tag keys are given".into());
    }
    let fits = if only_resources(statement, &[":instance/", ":volume/"])
        && has_condition(
            statement,
            "StringEquals",
            "ec2:CreateAction",
            "RunInstances",
        ) {
        keys_under("lifeguard:image:")
    } else if only_resources(statement, &[":instance/"]) {
        keys_under("lifeguard:drain:") && requires_managed_tag(statement, "aws:ResourceTag")
    } else if only_resources(statement, &[":launch-template/"]) {
        keys_under("lifeguard:image:") && requires_managed_tag(statement, "aws:ResourceTag")
    } else if only_resources(statement, &[":image/", ":snapshot/"]) {
        keys_under("lifeguard:image:")
            && has_condition(statement, "StringEquals", "ec2:CreateAction", "CreateImage")
    } else {
        false
    };
    (!fits).then(|| {
        "ec2:CreateTags only as lifeguard:drain:* on managed instances, lifeguard:image:* on \
         managed launch templates, or lifeguard:image:* on images and snapshots as CreateImage \
         makes them and on builders as RunInstances launches them"
            .to_string()
    })
}

/// The controller runs Run Command only through the documents its policy names.
#[test]
fn controller_sends_commands_only_through_named_documents() {
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
            assert!(
                [ARCHIVE_DOCUMENT, PATCH_DOCUMENT].contains(&document.as_str()),
                "{}: SendCommand runs {document}, which {} does not allow",
                call.at,
                CONTROLLER.policy
            );
        }
    }
    // AWS's own shell documents run whatever they are given as root: no source may name one.
    for file in source_files(&CONTROLLER) {
        let code = strip_comments(&std::fs::read_to_string(&file).expect("read source"));
        for document in ["\"AWS-RunShellScript\"", "\"AWS-RunPowerShellScript\""] {
            assert!(
                !code.contains(document),
                "{} names {document}: the controller may run only {ARCHIVE_DOCUMENT} and \
                 {PATCH_DOCUMENT}",
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

/// A drill reads back what agents wrote: every key the agent may encrypt archives with, the
/// controller may decrypt with, through S3 only (S3 decrypts an SSE-KMS object with the
/// reader's credentials).
#[test]
fn the_controller_can_decrypt_every_archive_key_the_agent_encrypts_with() {
    let agent = load_policy(&AGENT);
    let controller = load_policy(&CONTROLLER);
    let keys: Vec<&String> = agent
        .iter()
        .filter(|s| s.actions.iter().any(|a| a == "kms:GenerateDataKey"))
        .flat_map(|s| &s.resources)
        .collect();
    assert!(!keys.is_empty(), "the agent encrypts with no key");
    for key in keys {
        let granted = controller.iter().any(|s| {
            s.actions.iter().any(|a| a == "kms:Decrypt")
                && s.resources.contains(key)
                && has_condition(
                    s,
                    "StringEquals",
                    "kms:ViaService",
                    "s3.eu-west-1.amazonaws.com",
                )
        });
        assert!(
            granted,
            "the controller cannot decrypt archives encrypted with {key}"
        );
    }
}
