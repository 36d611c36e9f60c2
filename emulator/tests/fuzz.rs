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

fn apply(seed: &str, mutations: &[Mutation], tokens: &[&str]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
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
    seeds: Vec<String>,
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
        inputs(seeds, XML_TOKENS, "<>/=\"a-zA-Z0-9: &;#"),
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
        inputs(seeds, SQL_TOKENS, "a-z0-9 '()=<>!%_@.,;*+-/"),
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
        inputs(seeds, JSON_TOKENS, "{}\\[\\]\":,a-zA-Z0-9. +-"),
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
