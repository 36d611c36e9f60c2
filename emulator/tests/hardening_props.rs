//! Random requests at a running emulator process (issue 15): BrokerProperties with numbers,
//! TimeSpan and date strings of every shape, custom properties, batches, rule parameters
//! and clock moves. Every request must get an answer below 500, and the emulator must keep
//! serving. 512 cases by default; more with `PROPTEST_CASES`.

mod common;

use common::hostile::Emulator;
use common::{Client, queue, rule, subscription, topic};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// One request of the kinds the strategy draws.
#[derive(Debug, Clone)]
enum Request {
    /// A single send to the queue or the topic, with a BrokerProperties header (raw JSON
    /// text) and custom properties.
    Send {
        topic: bool,
        broker: String,
        user: Vec<(String, String)>,
    },
    /// A batch send (raw JSON text).
    Batch { topic: bool, body: String },
    /// A rule with a typed parameter used by its filter or action.
    Rule {
        type_name: String,
        text: String,
        action: bool,
    },
    /// A move of the manual clock.
    Advance(String),
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(1e20),
        Just(1.8e19),
        Just(9.3e11),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(-1.0),
        Just(0.0),
        (0u32..100_000).prop_map(f64::from),
    ]
}

/// A number as JSON: finite ones bare (or quoted), others as the strings clients send.
fn json_number() -> impl Strategy<Value = Value> {
    (number(), any::<bool>()).prop_map(|(n, quoted)| {
        let text = match n {
            n if n.is_nan() => "NaN".to_string(),
            n if n.is_infinite() => if n > 0.0 { "1e400" } else { "-1e400" }.to_string(),
            n => format!("{n:e}"),
        };
        match serde_json::Number::from_f64(n) {
            Some(bare) if !quoted => Value::Number(bare),
            _ => Value::String(text),
        }
    })
}

/// `[-][d.]hh:mm:ss[.f]` with every part drawn from numbers, digits and garbage.
fn timespan() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[0-9]{1,3}",
        "[0-9]{6,12}",
        Just("inf".to_string()),
        Just("1e400".to_string()),
        Just("1e300".to_string()),
        Just("NaN".to_string()),
        Just("-1".to_string()),
        "[0-9a-z.+-]{0,6}",
    ];
    (
        proptest::option::of(part.clone()),
        part.clone(),
        part.clone(),
        part,
        proptest::option::of("[0-9]{1,9}"),
    )
        .prop_map(|(days, h, m, s, fraction)| {
            let mut t = days.map(|d| format!("{d}.")).unwrap_or_default();
            t.push_str(&format!("{h}:{m}:{s}"));
            if let Some(f) = fraction {
                t.push('.');
                t.push_str(&f);
            }
            t
        })
}

/// RFC 1123-like dates, valid and not (five-digit years, out-of-range fields).
fn http_date() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["Mon", "Sun", "Xyz", ""]),
        0u32..40,
        prop::sample::select(vec!["Jan", "Dec", "Foo"]),
        prop_oneof![0i64..3000, 9990i64..10_010, Just(99_999), Just(-1)],
        0u32..30,
        0u32..70,
        prop::sample::select(vec!["GMT", "GMT+0000", "UTC", "+0000", ""]),
    )
        .prop_map(|(day, d, month, y, h, m, zone)| {
            format!("{day}, {d:02} {month} {y} {h:02}:{m:02}:00 {zone}")
        })
}

/// ISO 8601 timestamps, valid and not, for rule parameters.
fn iso_date() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("+10000".to_string()),
            Just("+99999".to_string()),
            Just("-0001".to_string()),
            Just("0000".to_string()),
            (1i64..10_000).prop_map(|y| format!("{y:04}"))
        ],
        1u32..14,
        1u32..33,
        prop::sample::select(vec!["Z", "", "+05:00", "-14:00", ".1234567Z"]),
    )
        .prop_map(|(y, m, d, zone)| format!("{y}-{m:02}-{d:02}T23:59:59{zone}"))
}

fn broker_properties() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        json_number(),
        timespan().prop_map(Value::String),
        http_date().prop_map(Value::String),
        "[ -~]{0,40}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(json!({"nested": [1, 2]})),
    ];
    let key = prop::sample::select(vec![
        "TimeToLive",
        "TimeToLiveTimeSpan",
        "ScheduledEnqueueTimeUtc",
        "MessageId",
        "SessionId",
        "Label",
        "CorrelationId",
        "ForcePersistence",
        "SequenceNumber",
        "Unknown",
    ]);
    prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    })
}

fn request() -> impl Strategy<Value = Request> {
    let user = prop::collection::vec(("[a-z][a-z0-9]{0,8}", "[ -~]{0,40}"), 0..4);
    let batch_item = (
        prop_oneof![
            "[ -~]{0,20}".prop_map(Value::String),
            json_number(),
            Just(Value::Null)
        ],
        any::<bool>(),
        broker_properties(),
        prop::collection::btree_map("[a-z]{1,6}", json_number(), 0..3),
    )
        .prop_map(|(body, b64, broker, user)| {
            json!({"Body": body, "IsBodyBase64": b64, "BrokerProperties": broker, "UserProperties": user})
        });
    let type_name = prop::sample::select(vec![
        "dateTime", "duration", "int", "long", "double", "string",
    ]);
    prop_oneof![
        4 => (any::<bool>(), broker_properties(), user).prop_map(|(topic, broker, user)| Request::Send {
            topic,
            broker: broker.to_string(),
            user,
        }),
        2 => (any::<bool>(), prop::collection::vec(batch_item, 0..8)).prop_map(|(topic, items)| Request::Batch {
            topic,
            body: Value::Array(items).to_string(),
        }),
        2 => (type_name, prop_oneof![iso_date(), timespan(), "[ -~]{0,20}", json_number().prop_map(|n| n.to_string())], any::<bool>())
            .prop_map(|(t, text, action)| Request::Rule { type_name: t.to_string(), text, action }),
        1 => prop_oneof![
            json_number().prop_map(|n| n.to_string().trim_matches('"').to_string()),
            "[ -~]{0,12}",
        ]
        .prop_map(Request::Advance),
    ]
}

async fn answer(c: &Client, request: &Request, n: usize) -> (u16, String) {
    let target = |topic: bool| if topic { "/t/messages" } else { "/q/messages" };
    let r = match request {
        Request::Send {
            topic,
            broker,
            user,
        } => {
            let mut headers: Vec<(&str, &str)> = vec![("BrokerProperties", broker)];
            headers.extend(user.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            c.post_message(target(*topic), "body", &headers).await
        }
        Request::Batch { topic, body } => {
            let batch = [("content-type", "application/vnd.microsoft.servicebus.json")];
            c.post_message(target(*topic), body, &batch).await
        }
        Request::Rule {
            type_name,
            text,
            action,
        } => {
            let escaped = servicebus_wire::xml::escape(text);
            let parameters = format!(
                r#"<Parameters><KeyValueOfstringanyType><Key>@p</Key><Value i:type="d6p1:{type_name}" xmlns:d6p1="http://www.w3.org/2001/XMLSchema">{escaped}</Value></KeyValueOfstringanyType></Parameters>"#
            );
            let body = if *action {
                format!(
                    r#"<Filter i:type="TrueFilter"/><Action i:type="SqlRuleAction"><SqlExpression>SET v = @p</SqlExpression>{parameters}</Action>"#
                )
            } else {
                format!(
                    r#"<Filter i:type="SqlFilter"><SqlExpression>v = @p</SqlExpression>{parameters}</Filter>"#
                )
            };
            c.put(&format!("/t/Subscriptions/s/Rules/r{n}"), rule(&body))
                .await
        }
        Request::Advance(seconds) => {
            let path = format!(
                "/$emulator/clock/advance?seconds={}",
                percent_encoding::utf8_percent_encode(seconds, percent_encoding::NON_ALPHANUMERIC)
            );
            c.send("POST", &path, None, &[], Some(c.token())).await
        }
    };
    (r.status, r.body)
}

#[test]
fn every_request_is_answered_below_500_and_the_emulator_keeps_serving() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emulator = rt.block_on(Emulator::start(&["--in-memory", "--clock", "manual"]));
    let c = emulator.client.clone();
    let emulator = std::cell::RefCell::new(emulator);
    rt.block_on(async {
        for (path, body) in [
            (
                "/q",
                queue("<RequiresDuplicateDetection>true</RequiresDuplicateDetection>"),
            ),
            ("/t", topic("")),
            ("/t/Subscriptions/s", subscription("")),
        ] {
            assert_eq!(c.put(path, body).await.status, 201, "{path}");
        }
    });
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let n = std::cell::Cell::new(0);
    let outcome = runner.run(&request(), |request| {
        n.set(n.get() + 1);
        let (status, body) = rt.block_on(answer(&c, &request, n.get()));
        if status >= 500 {
            return Err(TestCaseError::fail(format!("{status}: {body}")));
        }
        rt.block_on(emulator.borrow_mut().assert_serving());
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    assert!(n.get() >= cases as usize, "{} cases ran", n.get());
    rt.block_on(emulator.borrow_mut().assert_serving());
}
