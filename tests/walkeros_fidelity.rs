//! walkerOS 4.4's own code, run unmodified on edge cases of its Redis, Kafka and RudderStack
//! destinations, its collector and `include` (`tests/vectors/walkeros-fidelity.json`; its
//! `_about` says how it was recorded). Every case runs through `weir explain` with the same
//! config and event, and weir must make exactly the calls walkerOS made — except where weir
//! differs on purpose: those cases are listed in [`DIFFERENCES`] with the reason and what weir
//! does instead, which is checked too. No case goes unchecked.

mod support;

use std::process::Command;

use serde_json::{Map, Value, json};
use support::weir_binary;

fn fidelity() -> Value {
    serde_json::from_str(include_str!("vectors/walkeros-fidelity.json")).unwrap()
}

/// What weir did with one case.
#[derive(Debug)]
enum Outcome {
    /// The flow did not load (`weir explain` refused it): its error text.
    Invalid(String),
    /// The event was rejected (an error naming the field).
    Rejected(String),
    /// The calls walkerOS's test doubles would have recorded, in their shape.
    Calls(Vec<Value>),
}

/// Why weir differs, and what it does instead.
struct Difference {
    group: &'static str,
    case: &'static str,
    why: &'static str,
    check: fn(&Outcome) -> bool,
}

fn invalid_naming(outcome: &Outcome, text: &str) -> bool {
    matches!(outcome, Outcome::Invalid(error) if error.contains(text))
}

fn rejected_naming(outcome: &Outcome, text: &str) -> bool {
    matches!(outcome, Outcome::Rejected(error) if error.contains(text))
}

const DIFFERENCES: &[Difference] = &[
    Difference {
        group: "redis",
        case: "missingStreamKey",
        why: "a missing streamKey is a load error with walkerOS's message (walkerOS logs it and drops every event)",
        check: |o| invalid_naming(o, "Config settings redis.streamKey missing"),
    },
    Difference {
        group: "redis",
        case: "streamKeyNumberInSettings",
        why: "a streamKey that is not a string is a load error (walkerOS hands the number to ioredis)",
        check: |o| invalid_naming(o, "settings.redis.streamKey"),
    },
    Difference {
        group: "redis",
        case: "maxLenNegativeFraction",
        why: "maxLen must be a whole number (walkerOS sends MAXLEN ~ -2.5, which Redis refuses on every XADD)",
        check: |o| invalid_naming(o, "settings.redis.maxLen"),
    },
    Difference {
        group: "redis",
        case: "maxLenString",
        why: "maxLen must be a number and exactTrimming a boolean (walkerOS sends them as given)",
        check: |o| invalid_naming(o, "settings.redis.maxLen"),
    },
    Difference {
        group: "redis",
        case: "flatNullObjects",
        why: "a null `globals` is refused with an error naming it (walkerOS's collector throws and the event is lost)",
        check: |o| rejected_naming(o, "globals"),
    },
    Difference {
        group: "redis",
        case: "flatNullUser",
        why: "a null `user` is refused with an error naming it (walkerOS's collector throws and the event is lost)",
        check: |o| rejected_naming(o, "user"),
    },
    Difference {
        group: "kafka",
        case: "fractionalTimestamp",
        why: "a Kafka record's timestamp is whole milliseconds on the wire: weir sends the millisecond the \
              fraction falls in (walkerOS hands kafkajs the text \"1700000100123.5\")",
        check: |o| kafka_timestamp(o) == Some("1700000100123"),
    },
    Difference {
        group: "kafka",
        case: "nullTimestamp",
        why: "an event without a timestamp gets the time it was produced, as librdkafka does (walkerOS hands \
              kafkajs the text \"null\")",
        check: |o| kafka_timestamp(o).is_some_and(|t| t.parse::<u64>().is_ok_and(|ms| ms > 1_700_000_000_000)),
    },
    Difference {
        group: "kafka",
        case: "hugeTimestamp",
        why: "a timestamp later than any date (1.5e21 ms) gets the time it was produced; Kafka's is a 64-bit \
              count of milliseconds (walkerOS hands kafkajs the text \"1.5e+21\")",
        check: |o| kafka_timestamp(o).is_some_and(|t| t.parse::<u64>().is_ok_and(|ms| ms > 1_700_000_000_000)),
    },
    Difference {
        group: "kafka",
        case: "ruleTopicEmpty",
        why: "an empty topic is refused at load time (walkerOS sends to the topic \"\", which every broker refuses)",
        check: |o| invalid_naming(o, "mapping.order.complete.settings.topic"),
    },
    Difference {
        group: "kafka",
        case: "missingTopic",
        why: "a missing topic is a load error with walkerOS's message (walkerOS logs it and drops every event)",
        check: |o| invalid_naming(o, "Config settings kafka.topic missing"),
    },
    Difference {
        group: "collector",
        case: "globalsNull",
        why: "a null `globals` is refused with an error naming it (walkerOS's collector throws and the event is lost)",
        check: |o| rejected_naming(o, "globals"),
    },
    Difference {
        group: "collector",
        case: "userNull",
        why: "a null `user` is refused with an error naming it (walkerOS's collector throws and the event is lost)",
        check: |o| rejected_naming(o, "user"),
    },
    Difference {
        group: "collector",
        case: "nullSections",
        why: "a null `globals` or `user` is refused with an error naming it (walkerOS's collector throws)",
        check: |o| rejected_naming(o, "globals"),
    },
    Difference {
        group: "collector",
        case: "nullSectionsExpress",
        why: "a null `globals` or `user` is answered 400 naming it (walkerOS answers 200, then its collector \
              throws and the event is lost)",
        check: |o| rejected_naming(o, "globals"),
    },
    Difference {
        group: "collector",
        case: "dataArray",
        why: "`data` must be an object (or null): an error naming the field (walkerOS passes the array on)",
        check: |o| rejected_naming(o, "data"),
    },
    Difference {
        group: "collector",
        case: "dataString",
        why: "`data` must be an object (or null): an error naming the field (walkerOS passes the string on)",
        check: |o| rejected_naming(o, "data"),
    },
];

fn kafka_timestamp(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Calls(calls) => calls.first()?["messages"][0]["timestamp"].as_str(),
        _ => None,
    }
}

/// The destination type a case's config is for (a collector case without one: `file`).
fn destination_type(config: &Value) -> &'static str {
    let settings = &config["settings"];
    if settings.get("redis").is_some() {
        "redis"
    } else if settings.get("kafka").is_some() {
        "kafka"
    } else if settings.get("writeKey").is_some() {
        "rudderstack"
    } else {
        "file"
    }
}

/// The case's config as a weir flow: one HTTP source and destination `d`. The vectors show a
/// JavaScript function as `"<fn: …>"`; weir is given it as walkerOS flow files write it.
fn flow(config: &Value, kind: &str) -> Value {
    let mut config = config.clone();
    let source = config.as_object_mut().and_then(|c| c.remove("sources"));
    restore_code(&mut config);
    if kind == "file" {
        config["settings"] = json!({"path": "events.jsonl"});
    }
    let mut flow = json!({
        "sources": {"http": {"type": "http"}},
        "destinations": {"d": {"type": kind, "config": config}},
        "collector": {"release": "4.4.0"}
    });
    if let Some(Value::Object(sources)) = source
        && let Some(express) = sources.get("express")
    {
        flow["sources"]["http"]["config"] = express.clone();
        flow["sources"]["http"]["config"]["settings"] = json!({});
    }
    flow
}

fn restore_code(value: &mut Value) {
    match value {
        Value::String(text) if text.starts_with("<fn: ") => {
            *text = format!("$code:{}", &text[5..text.len() - 1]);
        }
        Value::Array(items) => items.iter_mut().for_each(restore_code),
        Value::Object(fields) => fields.values_mut().for_each(restore_code),
        _ => {}
    }
}

/// Runs `weir explain` on one case.
fn run(config: &Value, event: &Value) -> Outcome {
    let kind = destination_type(config);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flow.json"), flow(config, kind).to_string()).unwrap();
    std::fs::write(dir.path().join("events.jsonl"), event.to_string()).unwrap();
    let output = Command::new(weir_binary())
        .args(["explain", "--config", "flow.json", "events.jsonl"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    if !output.status.success() {
        return Outcome::Invalid(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let records: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    match record["outcome"].as_str().unwrap() {
        "send" => {}
        "rejected" => return Outcome::Rejected(record["reason"].as_str().unwrap_or_default().to_owned()),
        _ => return Outcome::Calls(Vec::new()),
    }
    let wire = &record["wire"];
    Outcome::Calls(match kind {
        "redis" => vec![Value::Array(wire["command"].as_array().unwrap()[1..].to_vec())],
        "kafka" => vec![wire.clone()],
        "rudderstack" => wire["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|call| {
                let mut params: Map<String, Value> = call["message"].as_object().unwrap().clone();
                for key in ["context", "type", "channel", "originalTimestamp", "messageId"] {
                    params.remove(key);
                }
                json!([call["call"], params])
            })
            .collect(),
        _ => vec![serde_json::from_str(wire["line"].as_str().unwrap()).unwrap()],
    })
}

/// walkerOS's XADD arguments as the text that goes on the wire (numbers as JavaScript's
/// String() writes them; these are all integers or short fractions).
fn as_wire_text(calls: &Value) -> Vec<Value> {
    calls
        .as_array()
        .unwrap()
        .iter()
        .map(|call| match call {
            Value::Array(args) => Value::Array(
                args.iter()
                    .map(|arg| match arg {
                        Value::Number(n) => Value::String(n.to_string()),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            other => other.clone(),
        })
        .collect()
}

/// The collector's random or clock-bound fields, blanked: `id`, `source.trace`, a numeric
/// `timestamp` and `timing`.
fn blank_random(event: &mut Value) {
    for key in ["id", "timestamp", "timing"] {
        if let Some(value) = event.get_mut(key)
            && !value.is_null()
        {
            *value = Value::from(format!("<{key}>"));
        }
    }
    if let Some(trace) = event.pointer_mut("/source/trace") {
        *trace = Value::from("<trace>");
    }
}

fn check_group(group: &str) {
    let vectors = fidelity();
    let cases = vectors[group].as_object().unwrap();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for (name, case) in cases {
        let outcome = run(&case["config"], &case["in"]);
        if let Some(difference) = DIFFERENCES.iter().find(|d| d.group == group && d.case == name) {
            if !(difference.check)(&outcome) {
                failures.push(format!(
                    "{group}.{name}: weir differs on purpose ({}), but did not do that: {outcome:?}",
                    difference.why
                ));
            }
            continue;
        }
        // A collector case shows the event the destination received (`out`), or its calls.
        let received = case.get("out");
        let expected: Vec<Value> = match received.cloned() {
            Some(Value::Null) => Vec::new(),
            Some(mut out) => {
                blank_random(&mut out);
                vec![out]
            }
            None => as_wire_text(&case["calls"]),
        };
        let got = match outcome {
            Outcome::Calls(mut calls) if received.is_some() => {
                calls.iter_mut().for_each(blank_random);
                calls
            }
            Outcome::Calls(calls) => calls,
            other => {
                failures.push(format!("{group}.{name}: walkerOS made {expected:?}\n  weir: {other:?}"));
                continue;
            }
        };
        if got != expected {
            failures.push(format!(
                "{group}.{name}:\n  walkerOS: {}\n  weir:     {}",
                Value::Array(expected),
                Value::Array(got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn redis_destination_edge_cases() {
    check_group("redis");
}

#[test]
fn kafka_destination_edge_cases() {
    check_group("kafka");
}

#[test]
fn rudderstack_destination_edge_cases() {
    check_group("rudder");
}

#[test]
fn collector_edge_cases() {
    check_group("collector");
}

#[test]
fn include_edge_cases() {
    check_group("include");
}

/// Every listed difference names a case that exists.
#[test]
fn differences_name_real_cases() {
    let vectors = fidelity();
    for difference in DIFFERENCES {
        assert!(
            vectors[difference.group].get(difference.case).is_some(),
            "{}.{} is not a case",
            difference.group,
            difference.case
        );
    }
}
