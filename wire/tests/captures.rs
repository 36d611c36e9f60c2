//! Replays what four real Service Bus clients put on the wire (`shared/data/captures`).

use std::path::PathBuf;

use servicebus_wire::atom::{EntryContent, parse_entry};
use servicebus_wire::xml;
use servicebus_wire::{EntityDescription, RuleDescription, SasToken, description::RuntimeInfo};

const CAPTURE_KEY: &str = "c29tZS1mYWtlLXRlc3Qta2V5LW5vdC1hLXNlY3JldA==";
const FILES: [&str; 4] = [
    "node-azure-sb.jsonl",
    "node-azure-service-bus-admin.jsonl",
    "py-azure-servicebus-admin.jsonl",
    "py-azure-servicebus-legacy.jsonl",
];

struct Request {
    file: &'static str,
    seq: u64,
    step: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn requests() -> Vec<Request> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/captures");
    let mut out = Vec::new();
    for file in FILES {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let Some(r) = v.get("request") else { continue };
            out.push(Request {
                file,
                seq: v["seq"].as_u64().unwrap(),
                step: v["step"].as_str().unwrap().to_string(),
                method: r["method"].as_str().unwrap().to_string(),
                path: r["path"].as_str().unwrap().to_string(),
                headers: r["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h[0].as_str().unwrap().to_string(),
                            h[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect(),
                body: r["body"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    out
}

fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn every_captured_authorization_header_verifies() {
    let all = requests();
    let (mut good, mut wrong) = (0, 0);
    for r in &all {
        let auth = header(r, "authorization")
            .unwrap_or_else(|| panic!("{} #{} has no Authorization", r.file, r.seq));
        let token = SasToken::parse(auth).unwrap_or_else(|e| panic!("{} #{}: {e}", r.file, r.seq));
        let decoded_path = percent_decode(&r.path);
        // Expiry ignored (the captures are old): verify as of the epoch.
        let result = token.verify(CAPTURE_KEY, 0, &decoded_path);
        if r.step.contains("wrong SAS key") {
            assert!(
                result.is_err(),
                "{} #{} signed with the wrong key verified",
                r.file,
                r.seq
            );
            wrong += 1;
        } else {
            assert_eq!(
                result,
                Ok(()),
                "{} #{} {} {}",
                r.file,
                r.seq,
                r.method,
                r.path
            );
            good += 1;
        }
    }
    assert_eq!(good + wrong, all.len());
    assert_eq!(
        good, 174,
        "every request of the four captures but the wrong-key ones"
    );
    assert_eq!(wrong, 4, "each client has one wrong-key step");
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[test]
fn every_captured_management_body_parses_and_round_trips() {
    let mut parsed = 0;
    for r in requests()
        .iter()
        .filter(|r| r.method == "PUT" && !r.body.is_empty())
    {
        let content = parse_entry(&r.body)
            .unwrap_or_else(|e| panic!("{} #{}: {e}\n{}", r.file, r.seq, r.body));
        match content {
            EntryContent::Entity(p) => {
                // Response form re-parses to the same settings.
                let runtime = RuntimeInfo::empty(chrono::Utc::now());
                let response = p.description.to_response_xml(&runtime);
                let again =
                    EntityDescription::parse(p.description.kind, &xml::parse(&response).unwrap())
                        .unwrap();
                assert_eq!(
                    again.description, p.description,
                    "{} #{} response form",
                    r.file, r.seq
                );
                let request = p.description.to_request_xml(p.default_rule.as_ref());
                let again =
                    EntityDescription::parse(p.description.kind, &xml::parse(&request).unwrap())
                        .unwrap();
                assert_eq!(
                    again.description, p.description,
                    "{} #{} request form",
                    r.file, r.seq
                );
                assert_eq!(again.default_rule, p.default_rule);
            }
            EntryContent::Rule(rule) => {
                let response = rule.to_response_xml("r", chrono::Utc::now());
                let again = RuleDescription::parse(&xml::parse(&response).unwrap()).unwrap();
                assert_eq!(again.filter, rule.filter, "{} #{}", r.file, r.seq);
                assert_eq!(again.action, rule.action, "{} #{}", r.file, r.seq);
                let request = rule.to_inner_xml("RuleDescription", true);
                assert_eq!(
                    RuleDescription::parse(&xml::parse(&request).unwrap()).unwrap(),
                    rule
                );
            }
        }
        parsed += 1;
    }
    assert!(parsed >= 40, "only {parsed} bodies");
}

#[test]
fn captured_values_are_read_as_sent() {
    use servicebus_wire::{Filter, RuleAction, TimeSpan};
    let by = |file: &str, seq: u64| {
        let r = requests()
            .into_iter()
            .find(|r| r.file == file && r.seq == seq)
            .unwrap();
        parse_entry(&r.body).unwrap()
    };
    // Legacy Node subscription create.
    let EntryContent::Entity(sub) = by("node-azure-sb.jsonl", 12) else {
        panic!()
    };
    assert_eq!(sub.description.lock_duration, TimeSpan::from_secs(45));
    assert_eq!(sub.description.max_delivery_count, 7);
    assert!(sub.description.dead_lettering_on_message_expiration);
    assert_eq!(
        sub.description.auto_delete_on_idle,
        TimeSpan::from_mins(120)
    );
    // Legacy Node action type name.
    let EntryContent::Rule(rule) = by("node-azure-sb.jsonl", 28) else {
        panic!()
    };
    assert!(
        matches!(rule.action, RuleAction::Sql { ref expression, .. } if expression == "SET tagged = 'yes'")
    );
    // JS admin: DefaultRuleDescription with a name, p4:type prefixes.
    let EntryContent::Entity(sub) = by("node-azure-service-bus-admin.jsonl", 20) else {
        panic!()
    };
    let rule = sub.default_rule.unwrap();
    assert_eq!(rule.name.as_deref(), Some("initial"));
    assert!(
        matches!(rule.filter, Filter::Sql { ref expression, .. } if expression == "color = 'red'")
    );
    // Python 7.x: correlation filter with typed properties and xsi: prefix.
    let EntryContent::Rule(rule) = by("py-azure-servicebus-admin.jsonl", 22) else {
        panic!()
    };
    let Filter::Correlation(c) = rule.filter else {
        panic!()
    };
    assert_eq!(c.correlation_id.as_deref(), Some("corr-A"));
    let types: Vec<_> = c
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.type_name.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("color", "string"),
            ("n", "int"),
            ("flag", "boolean"),
            ("when", "dateTime"),
            ("span", "duration")
        ]
    );
    // Python 7.x update echoes read-only elements and the truncated infinity.
    let EntryContent::Entity(q) = by("py-azure-servicebus-admin.jsonl", 71) else {
        panic!()
    };
    assert!(q.description.auto_delete_on_idle.is_infinite());
    assert_eq!(q.description.max_delivery_count, 6);
    // Legacy Python: no <Action> means EmptyRuleAction.
    let EntryContent::Rule(rule) = by("py-azure-servicebus-legacy.jsonl", 20) else {
        panic!()
    };
    assert_eq!(rule.action, RuleAction::Empty);
}
