//! Fuzz targets (issue 15), proptest-driven so that they run on the stable toolchain and in
//! CI: the ATOM/XML parser, the SQL filter and action parser (and evaluation), and
//! BrokerProperties, batches and custom properties. Inputs are real seeds (the captured
//! clients' bodies and headers, the grammar's examples) mutated at random: bytes flipped,
//! tokens of each language inserted, spans cut, repeated or truncated; and wholly random
//! text. Nothing may panic, and what parses must print and parse back the same.
//!
//! Each target runs `FUZZ_CASES` inputs (default 3,000) or, with `FUZZ_SECONDS=N`, for N
//! seconds, and prints how many inputs it ran and how many parsed.

use std::time::{Duration, Instant};

use emulator::filter;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use servicebus_wire::atom::{self, EntryContent};
use servicebus_wire::description::RuntimeInfo;
use servicebus_wire::message::{BrokerProperties, parse_batch, parse_property};
use servicebus_wire::{RuleDescription, xml};

/// One mutation of a seed.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at a position (modulo the length) with this one.
    Flip(usize, u8),
    /// Insert a token of the language at a position.
    Insert(usize, usize),
    /// Remove a span.
    Cut(usize, usize),
    /// Repeat a span several times in place.
    Repeat(usize, usize, usize),
    /// Keep only a prefix.
    Truncate(usize),
}

fn mutation(tokens: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), 0..tokens).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<usize>(), 0usize..64).prop_map(|(at, n)| Mutation::Cut(at, n)),
        (any::<usize>(), 1usize..32, 1usize..200).prop_map(|(at, n, k)| Mutation::Repeat(at, n, k)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(seed: &[u8], mutations: &[Mutation], tokens: &[&str]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, t) => {
                let i = at(i, bytes.len());
                bytes.splice(i..i, tokens[t].bytes());
            }
            Mutation::Cut(i, n) => {
                let i = at(i, bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Repeat(i, n, k) => {
                let i = at(i, bytes.len());
                let end = (i + n).min(bytes.len());
                let span = bytes[i..end].to_vec();
                for _ in 0..k.min(4096 / span.len().max(1)) {
                    bytes.splice(i..i, span.iter().copied());
                }
            }
            Mutation::Truncate(i) => {
                let keep = at(i, bytes.len());
                bytes.truncate(keep);
            }
        }
    }
    bytes
}

/// Seeds mutated, or random text over the language's own characters.
fn inputs(
    seeds: Vec<Vec<u8>>,
    tokens: &'static [&'static str],
    alphabet: &'static str,
) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(tokens.len()), 0..8),
    )
        .prop_map(move |(seed, ms)| apply(&seed, &ms, tokens));
    let random = proptest::string::string_regex(&format!("[{alphabet}]{{0,200}}"))
        .expect("a valid character class")
        .prop_map(String::into_bytes);
    prop_oneof![4 => mutated, 1 => random, 1 => prop::collection::vec(any::<u8>(), 0..300)]
}

fn bytes_of(seeds: Vec<String>) -> Vec<Vec<u8>> {
    seeds.into_iter().map(String::into_bytes).collect()
}

/// Runs `check` on inputs until the case count or time budget is spent; prints the count.
fn fuzz(
    name: &str,
    strategy: impl Strategy<Value = Vec<u8>>,
    check: impl Fn(&[u8]) -> Result<bool, TestCaseError>,
) {
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let cases: u32 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let (ran, parsed) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    loop {
        let batch = if seconds > 0 { 2000 } else { cases };
        let mut runner = TestRunner::new(Config {
            cases: batch,
            failure_persistence: None,
            ..Config::default()
        });
        let outcome = runner.run(&strategy, |input| {
            ran.set(ran.get() + 1);
            if check(&input)? {
                parsed.set(parsed.get() + 1);
            }
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{name}: {e}");
        }
        if seconds == 0 || Instant::now() >= deadline {
            break;
        }
    }
    // Written to the process's stderr directly, so the runner shows it.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {name}: {} inputs in {:.1?}, {} parsed, no panic",
        ran.get(),
        started.elapsed(),
        parsed.get()
    );
}

/// Request bodies and headers the four captured clients sent.
fn captured(field: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/captures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let request = &v["request"];
            match field {
                "body" => {
                    if let Some(b) = request["body"].as_str().filter(|b| b.contains('<')) {
                        out.push(b.to_string());
                    }
                }
                header => {
                    for h in request["headers"].as_array().into_iter().flatten() {
                        if h[0]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(header))
                        {
                            out.extend(h[1].as_str().map(str::to_string));
                        }
                    }
                }
            }
        }
    }
    assert!(!out.is_empty(), "no captured {field}");
    out
}

const XML_TOKENS: &[&str] = &[
    "<",
    ">",
    "</",
    "/>",
    "&",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "&bogus;",
    "\"",
    "'",
    " xmlns=\"urn:x\"",
    " xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"",
    " i:type=\"d6p1:dateTime\"",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?xml version=\"1.0\"?>",
    "<a><a><a><a>",
    "P10675199DT2H48M5.4775807S",
    "PT-1S",
    "P99999999999D",
    "+10000-01-01T00:00:00",
    "<SqlExpression>",
    "</SqlExpression>",
    "<KeyValueOfstringanyType><Key>@p</Key><Value>",
    "\u{0}",
    "\u{feff}",
];

#[test]
fn fuzz_atom_xml_parser() {
    let seeds = captured("body");
    fuzz(
        "atom-xml",
        inputs(bytes_of(seeds), XML_TOKENS, "<>/=\"a-zA-Z0-9: &;#"),
        |bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Ok(false);
            };
            let _ = xml::parse(text);
            let Ok(content) = atom::parse_entry(text) else {
                return Ok(false);
            };
            // What parses writes out, and what it writes parses back the same.
            let written = match &content {
                EntryContent::Entity(parsed) => parsed
                    .description
                    .to_response_xml(&RuntimeInfo::empty(chrono::Utc::now())),
                EntryContent::Rule(rule) => rule.to_response_xml("r", chrono::Utc::now()),
            };
            let again = atom::parse_entry(&written).map_err(|e| {
                TestCaseError::fail(format!("written XML does not parse: {e}: {written}"))
            })?;
            let same = match (&content, &again) {
                (EntryContent::Entity(a), EntryContent::Entity(b)) => {
                    a.description == b.description
                }
                (EntryContent::Rule(a), EntryContent::Rule(b)) => {
                    a.filter == b.filter && a.action == b.action
                }
                _ => false,
            };
            prop_assert!(same, "round trip changed it: {text}");
            Ok(true)
        },
    );
}

const SQL_SEEDS: &[&str] = &[
    "color = 'red' AND n > 5",
    "sys.Label = 'x' OR sys.To LIKE 'node-%' ESCAPE '!'",
    "NOT (a IS NULL) AND b IN ('x', 'y', 3) AND EXISTS(c)",
    "(n * 2 + 1) % 7 <> -3 AND d >= 1.5e3",
    "user.[weird name] = @p AND property('x') = newid()",
    "1=1",
    "x LIKE '%a_b%' AND y NOT LIKE '[%]'",
    "SET tagged = 'yes'; REMOVE color; SET sys.Label = sys.To",
    "SET n = n + 1; SET s = @p",
];

const SQL_TOKENS: &[&str] = &[
    "(",
    ")",
    "'",
    "''",
    "\"",
    "[",
    "]",
    " AND ",
    " OR ",
    " NOT ",
    " LIKE ",
    " ESCAPE ",
    " IN (",
    " IS NULL",
    "%",
    "_",
    "@p",
    "sys.",
    "user.",
    "9223372036854775807",
    "-9223372036854775808",
    "1e400",
    "0x",
    ";",
    "SET ",
    "REMOVE ",
    "--",
    "/*",
    "*/",
    "newid()",
    "EXISTS(",
    "(((((((((((",
    ")))))))))))",
    "\u{0}",
];

#[test]
fn fuzz_sql_filter_parser() {
    let seeds = SQL_SEEDS.iter().map(|s| s.to_string()).collect();
    fuzz(
        "sql",
        inputs(bytes_of(seeds), SQL_TOKENS, "a-z0-9 '()=<>!%_@.,;*+-/"),
        |bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Ok(false);
            };
            let mut parsed = false;
            if let Ok(expr) = filter::parse_expression(text) {
                parsed = true;
                // The canonical printer and the parser agree. (The printer brackets every
                // operation and spells `user.` out, so an input near the parser's nesting
                // or token limit prints past it: those refusals are the only ones allowed.)
                let printed = expr.to_string();
                match filter::parse_expression(&printed) {
                    Ok(again) => prop_assert_eq!(&again, &expr, "{} printed as {}", text, printed),
                    Err(e) if e.message.contains("levels deep") || e.message.contains("tokens") => {
                    }
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "printed form does not parse: {e}: {printed}"
                        )));
                    }
                }
            }
            if filter::parse_statements(text).is_ok() {
                parsed = true;
            }
            // Compiling and evaluating against a message with long and odd properties.
            if let Ok(rule) = filter::compile(&RuleDescription::sql(text)) {
                let message = Message;
                let _ = rule.matches(&message);
            }
            Ok(parsed)
        },
    );
}

/// A message whose every property is present and long.
struct Message;

impl filter::value::Properties for Message {
    fn system(&self, p: filter::value::SystemProperty) -> Option<filter::value::Value> {
        let _ = p;
        Some(filter::value::Value::String("a%_b".repeat(2000)))
    }

    fn user(&self, name: &str) -> Option<filter::value::Value> {
        Some(match name.len() % 3 {
            0 => filter::value::Value::String("ab".repeat(8000)),
            1 => filter::value::Value::Int(i64::MAX),
            _ => filter::value::Value::Double(f64::NAN),
        })
    }
}

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "1e400",
    "-1",
    "1e20",
    "\\u0000",
    "\\ud800",
    "\"TimeToLive\":",
    "\"TimeToLiveTimeSpan\":\"inf.00:00:00\"",
    "\"ScheduledEnqueueTimeUtc\":\"Fri, 31 Dec 99999 00:00:00 GMT\"",
    "\"MessageId\":",
    "{\"Body\":\"\"},",
    "\"IsBodyBase64\":true",
    "\"UserProperties\":{\"a\":",
];

#[test]
fn fuzz_broker_properties_and_batches() {
    let mut seeds = captured("BrokerProperties");
    seeds.extend([
        r#"[{"Body":"first","BrokerProperties":{"Label":"M1","TimeToLive":40}},{"Body":"second","UserProperties":{"Priority":"Low","n":1.5}}]"#.to_string(),
        r#"[{"Body":"aGk=","IsBodyBase64":true,"BrokerProperties":{"TimeToLiveTimeSpan":"1.00:00:00"}}]"#.to_string(),
        r#""Tue, 02 Jan 2024 03:04:05 GMT""#.to_string(),
    ]);
    fuzz(
        "broker-properties",
        inputs(bytes_of(seeds), JSON_TOKENS, "{}\\[\\]\":,a-zA-Z0-9. +-"),
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            let _ = parse_property(&text);
            let _ = parse_batch(bytes);
            let Ok(props) = BrokerProperties::parse_client(&text) else {
                return Ok(false);
            };
            // What a receiver gets back reads as what was sent.
            let written = props.to_json();
            let again = BrokerProperties::parse_received(&written)
                .map_err(|e| TestCaseError::fail(format!("{e}: {written}")))?;
            prop_assert_eq!(again.message_id, props.message_id);
            prop_assert_eq!(again.time_to_live, props.time_to_live);
            Ok(true)
        },
    );
}

/// AMQP frames as the SDKs send them (contract traces): the seeds of the frame target.
fn amqp_frame_seeds() -> Vec<Vec<u8>> {
    use fe2o3_amqp_types::definitions::{Error, ErrorCondition, Fields, Handle, Role};
    use fe2o3_amqp_types::messaging::{Modified, Rejected, Source, Target};
    use fe2o3_amqp_types::performatives::{
        Attach, Begin, Close, Detach, Disposition, End, Flow, Open, Transfer,
    };
    use fe2o3_amqp_types::primitives::{Symbol, Value};
    fn frame(channel: u16, performative: &impl serde::Serialize, payload: &[u8]) -> Vec<u8> {
        let body = serde_amqp::to_vec(performative).expect("a performative encodes");
        let size = (8 + body.len() + payload.len()) as u32;
        let mut out = size.to_be_bytes().to_vec();
        out.extend([2, 0]);
        out.extend(channel.to_be_bytes());
        out.extend(body);
        out.extend(payload);
        out
    }
    let mut info = Fields::default();
    info.insert(Symbol::from("DeadLetterReason"), Value::from("bad"));
    let mut filter = fe2o3_amqp_types::messaging::FilterSet::default();
    filter.insert(Symbol::from("com.microsoft:session-filter"), Value::Null);
    let attach = Attach {
        name: "link".into(),
        handle: Handle(1),
        role: Role::Receiver,
        snd_settle_mode: Default::default(),
        rcv_settle_mode: Default::default(),
        source: Some(Box::new(Source {
            address: Some("amqps://127.0.0.1:5672/q/Subscriptions/s/$DeadLetterQueue".into()),
            filter: Some(filter),
            ..Source::default()
        })),
        target: Some(Box::new(Target::from("receiver-link").into())),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: Some(1 << 20),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: Some(Fields::default()),
    };
    let message = {
        use fe2o3_amqp_types::messaging::{Body, Data, Message};
        let m: Message<Body<Value>> = Message {
            header: Some(Default::default()),
            delivery_annotations: None,
            message_annotations: Some(Default::default()),
            properties: Some(fe2o3_amqp_types::messaging::Properties {
                message_id: Some(fe2o3_amqp_types::messaging::MessageId::String("m".into())),
                ..Default::default()
            }),
            application_properties: Some(Default::default()),
            body: Body::Data(vec![Data(vec![1u8, 2, 3].into())].into()),
            footer: None,
        };
        serde_amqp::to_vec(&fe2o3_amqp_types::messaging::message::__private::Serializable(m))
            .expect("a message encodes")
    };
    let transfer = Transfer {
        handle: Handle(1),
        delivery_id: Some(0),
        delivery_tag: Some(vec![0u8, 0, 0, 1].into()),
        message_format: Some(0x8001_3700),
        settled: Some(false),
        more: false,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    };
    let disposition = |state| Disposition {
        role: Role::Receiver,
        first: 0,
        last: Some(3),
        settled: false,
        state: Some(state),
        batchable: false,
    };
    vec![
        frame(
            0,
            &Open {
                container_id: "SBSender-1".into(),
                hostname: Some("127.0.0.1".into()),
                max_frame_size: 65536.into(),
                channel_max: 65535.into(),
                idle_time_out: Some(60_000),
                outgoing_locales: None,
                incoming_locales: None,
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            },
            &[],
        ),
        frame(
            1,
            &Begin {
                remote_channel: None,
                next_outgoing_id: 0,
                incoming_window: 2048,
                outgoing_window: u32::MAX,
                handle_max: Handle(u32::MAX),
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            },
            &[],
        ),
        frame(1, &attach, &[]),
        frame(
            1,
            &Flow {
                next_incoming_id: Some(0),
                incoming_window: 2048,
                next_outgoing_id: 0,
                outgoing_window: u32::MAX,
                handle: Some(Handle(1)),
                delivery_count: Some(0),
                link_credit: Some(100),
                available: None,
                drain: true,
                echo: true,
                properties: None,
            },
            &[],
        ),
        frame(1, &transfer, &message),
        frame(
            1,
            &disposition(fe2o3_amqp_types::messaging::DeliveryState::Rejected(
                Rejected {
                    error: Some(Error::new(
                        ErrorCondition::Custom(Symbol::from("com.microsoft:dead-letter")),
                        Some("why".to_string()),
                        Some(info),
                    )),
                },
            )),
            &[],
        ),
        frame(
            1,
            &disposition(fe2o3_amqp_types::messaging::DeliveryState::Modified(
                Modified {
                    delivery_failed: Some(true),
                    undeliverable_here: Some(false),
                    message_annotations: None,
                },
            )),
            &[],
        ),
        frame(
            1,
            &Detach {
                handle: Handle(1),
                closed: true,
                error: None,
            },
            &[],
        ),
        frame(1, &End { error: None }, &[]),
        frame(0, &Close { error: None }, &[]),
        message,
    ]
}

/// Bytes AMQP encodings are made of: constructors of described lists, maps, arrays,
/// strings and symbols (ASCII, so they fit the token list; other bytes come from flips).
const AMQP_TOKENS: &[&str] = &[
    "\u{0}S\u{10}",
    "\u{0}S\u{12}",
    "\u{0}S\u{14}",
    "\u{0}S\u{15}",
    "\u{0}S\u{25}",
    "\u{0}S\u{70}",
    "\u{0}Su",
    "\u{0}Sw",
    "E",
    "@",
    "A",
    "B",
    "C",
    "D",
    "P\u{7f}",
    "`\u{7f}\u{7f}",
    "p\u{7f}\u{7f}\u{7f}\u{7f}",
    "\u{0}\u{0}\u{0}\u{0}",
];

#[test]
fn fuzz_amqp_frames_and_messages() {
    let seeds = amqp_frame_seeds();
    fuzz(
        "amqp-frames",
        inputs(seeds, AMQP_TOKENS, "\\x00-\\x7f"),
        |bytes| {
            // As a frame: with its size field fixed up, so the body is what gets exercised.
            let mut framed = bytes.to_vec();
            if framed.len() >= 8 {
                let size = framed.len() as u32;
                framed[..4].copy_from_slice(&size.to_be_bytes());
            }
            let frame = emulator::amqp::decode_frame(&framed);
            // As a message payload (a transfer's), single and batch.
            let single = emulator::amqp::decode_message(0, bytes);
            let batch = emulator::amqp::decode_message(0x8001_3700, bytes);
            Ok(frame.is_ok() || single.is_ok() || batch.is_ok())
        },
    );
}
