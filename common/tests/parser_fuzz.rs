//! The parsers return errors, never panic: arbitrary bytes, byte-level mutations of every
//! fixture, and structural mutations (fields removed or replaced by values of other types).

// A failed unwrap in a test is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use lifeguard_common::message::{self, Explanation, imds};
use proptest::prelude::*;
use serde_json::Value;

fn fixtures() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws-events");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "json" || ext == "txt")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

/// Runs every parser on the input; each may fail, none may panic.
fn exercise(bytes: &[u8]) {
    if let Ok(parsed) = message::parse(bytes) {
        let explanation = Explanation::of(&parsed);
        serde_json::to_string(&explanation).unwrap();
    }
    let text = String::from_utf8_lossy(bytes);
    let _ = imds::parse_target_lifecycle_state(&text);
    let _ = imds::parse_spot_instance_action(&text);
    let _ = imds::parse_spot_termination_time(&text);
    let _ = imds::parse_rebalance_recommendation(&text);
    let _ = imds::parse_maintenance_events(&text);
    let _ = Explanation::of_imds_body(&text);
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Delete { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match *mutation {
        Mutation::Flip { at, bits } => bytes[at % len] ^= bits,
        Mutation::Truncate { at } => bytes.truncate(at % len),
        Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
        Mutation::Delete { at, len: count } => {
            let start = at % len;
            let end = (start + count).min(len);
            bytes.drain(start..end);
        }
    }
}

/// A JSON value of any type, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String(String::new())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Every path to a value inside `value`.
fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(key.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                prefix.push(index.to_string());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn pointer(path: &[String]) -> String {
    path.iter()
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_text(text in "\\PC{0,256}") {
        exercise(text.as_bytes());
    }

    #[test]
    fn byte_mutations_of_fixtures(
        index in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let all = fixtures();
        let mut bytes = all[index.index(all.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        exercise(&bytes);
    }

    #[test]
    fn structural_mutations_of_fixtures(
        index in any::<prop::sample::Index>(),
        target in any::<prop::sample::Index>(),
        replacement in any_json(),
        remove in any::<bool>(),
    ) {
        let all = fixtures();
        let bytes = &all[index.index(all.len())];
        let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
            exercise(bytes);
            return Ok(());
        };
        let mut found = Vec::new();
        paths(&value, &mut Vec::new(), &mut found);
        let path = &found[target.index(found.len())];
        if remove && !path.is_empty() {
            let parent = pointer(&path[..path.len() - 1]);
            let last = &path[path.len() - 1];
            match value.pointer_mut(&parent) {
                Some(Value::Object(map)) => { map.remove(last); }
                Some(Value::Array(items)) => {
                    if let Ok(i) = last.parse::<usize>() && i < items.len() { items.remove(i); }
                }
                _ => {}
            }
        } else if let Some(slot) = value.pointer_mut(&pointer(path)) {
            *slot = replacement;
        }
        exercise(value.to_string().as_bytes());
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(message::parse(deep.as_bytes()).is_err());
    let deep_object = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    assert!(message::parse(deep_object.as_bytes()).is_err());
}

#[test]
fn a_message_at_the_sqs_size_limit_is_handled() {
    let padding = "x".repeat(256 * 1024 - 200);
    let body = format!(
        r#"{{"source": "aws.ec2", "detail-type": "Something Else", "detail": {{"pad": "{padding}"}}}}"#
    );
    let parsed = message::parse(body.as_bytes()).unwrap();
    assert_eq!(parsed.message.kind(), "ignored");
}
