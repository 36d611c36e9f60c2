//! Messages on the REST wire: the `BrokerProperties` header, custom properties as headers,
//! and the JSON batch format (contract 3.1 to 3.4).

use std::time::{Duration, SystemTime};

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::duration::TimeSpan;
use crate::error::WireError;

/// `Content-Type` that selects a batch send (parameters ignored).
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";

/// The `BrokerProperties` fields. Clients set the first group; the broker sets the rest.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)] // each field is the JSON field of the same name
pub struct BrokerProperties {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub session_id: Option<String>,
    pub label: Option<String>,
    pub reply_to: Option<String>,
    pub to: Option<String>,
    pub reply_to_session_id: Option<String>,
    pub partition_key: Option<String>,
    /// Seconds.
    pub time_to_live: Option<f64>,
    pub scheduled_enqueue_time_utc: Option<DateTime<Utc>>,
    pub force_persistence: Option<bool>,
    // Broker-set.
    pub sequence_number: Option<u64>,
    pub enqueued_sequence_number: Option<u64>,
    pub enqueued_time_utc: Option<DateTime<Utc>>,
    pub lock_token: Option<String>,
    pub locked_until_utc: Option<DateTime<Utc>>,
    pub delivery_count: Option<u32>,
    pub state: Option<String>,
}

/// Longest `MessageId` or `SessionId`.
pub const MAX_ID_LEN: usize = 128;

fn field_error(field: &str, value: &Value, reason: &str) -> WireError {
    WireError::Value {
        element: "BrokerProperties",
        value: format!("{field}: {value}"),
        reason: reason.to_string(),
    }
}

fn text_of(field: &str, v: &Value) -> Result<String, WireError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(field_error(field, v, "expected a string")),
    }
}

impl BrokerProperties {
    /// Reads what a client sends: a JSON object, values as JSON types or as strings
    /// (legacy Python sends `"3600"`), unknown and broker-set fields ignored.
    ///
    /// # Errors
    ///
    /// [`WireError::Value`] naming the field that is malformed.
    pub fn parse_client(json: &str) -> Result<Self, WireError> {
        let value: Value = serde_json::from_str(json).map_err(|e| WireError::Value {
            element: "BrokerProperties",
            value: json.chars().take(100).collect(),
            reason: format!("not valid JSON ({e})"),
        })?;
        let Value::Object(map) = value else {
            return Err(WireError::Value {
                element: "BrokerProperties",
                value: json.chars().take(100).collect(),
                reason: "expected a JSON object".into(),
            });
        };
        Self::from_map(&map)
    }

    /// Reads what a receiver gets: as [`BrokerProperties::parse_client`], plus the
    /// broker-set fields (`SequenceNumber`, `DeliveryCount`, `LockToken`, `LockedUntilUtc`,
    /// `EnqueuedTimeUtc`, `EnqueuedSequenceNumber`, `State`).
    ///
    /// # Errors
    ///
    /// [`WireError::Value`] naming the field that is malformed.
    pub fn parse_received(json: &str) -> Result<Self, WireError> {
        let mut p = Self::parse_client(json)?;
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) else {
            return Ok(p);
        };
        let number = |k: &str| {
            map.get(k).and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
        };
        let date = |k: &str| map.get(k).and_then(Value::as_str).and_then(parse_http_date);
        p.sequence_number = number("SequenceNumber");
        p.enqueued_sequence_number = number("EnqueuedSequenceNumber");
        p.delivery_count = number("DeliveryCount").and_then(|n| u32::try_from(n).ok());
        p.lock_token = map
            .get("LockToken")
            .and_then(Value::as_str)
            .map(str::to_string);
        p.locked_until_utc = date("LockedUntilUtc");
        p.enqueued_time_utc = date("EnqueuedTimeUtc");
        p.state = map.get("State").and_then(Value::as_str).map(str::to_string);
        Ok(p)
    }

    fn from_map(map: &Map<String, Value>) -> Result<Self, WireError> {
        let mut p = BrokerProperties::default();
        for (key, v) in map {
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "MessageId" | "SessionId" => {
                    let t = text_of(key, v)?;
                    if t.chars().count() > MAX_ID_LEN {
                        return Err(field_error(key, v, "longer than 128 characters"));
                    }
                    if key == "MessageId" {
                        p.message_id = Some(t);
                    } else {
                        p.session_id = Some(t);
                    }
                }
                "CorrelationId" => p.correlation_id = Some(text_of(key, v)?),
                "Label" => p.label = Some(text_of(key, v)?),
                "ReplyTo" => p.reply_to = Some(text_of(key, v)?),
                "To" => p.to = Some(text_of(key, v)?),
                "ReplyToSessionId" => p.reply_to_session_id = Some(text_of(key, v)?),
                "PartitionKey" => p.partition_key = Some(text_of(key, v)?),
                "TimeToLive" => {
                    let secs = match v {
                        Value::Number(n) => n.as_f64(),
                        Value::String(s) => s.trim().parse::<f64>().ok(),
                        _ => None,
                    }
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| field_error(key, v, "expected a positive number of seconds"))?;
                    // Longer than TimeSpan.MaxValue means "never expires", as the service
                    // reads it.
                    p.time_to_live = Some(secs.min(MAX_TIME_TO_LIVE_SECS));
                }
                "TimeToLiveTimeSpan" => {
                    let t = text_of(key, v)?;
                    let secs =
                        parse_dotnet_timespan(&t).map_err(|reason| field_error(key, v, reason))?;
                    p.time_to_live = Some(secs);
                }
                "ScheduledEnqueueTimeUtc" => {
                    let t = text_of(key, v)?;
                    p.scheduled_enqueue_time_utc = Some(
                        parse_http_date(&t)
                            .ok_or_else(|| field_error(key, v, "expected an RFC 1123 date"))?,
                    );
                }
                "ForcePersistence" => {
                    p.force_persistence = Some(match v {
                        Value::Bool(b) => *b,
                        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                        _ => return Err(field_error(key, v, "expected true or false")),
                    });
                }
                // Broker-set fields sent by a client are ignored, as the service does.
                _ => {}
            }
        }
        Ok(p)
    }

    /// Writes the header value a receiver gets: set fields only, in name order.
    pub fn to_json(&self) -> String {
        let mut map = std::collections::BTreeMap::<&str, Value>::new();
        let mut text = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                map.insert(k, Value::String(v.clone()));
            }
        };
        text("MessageId", &self.message_id);
        text("CorrelationId", &self.correlation_id);
        text("SessionId", &self.session_id);
        text("Label", &self.label);
        text("ReplyTo", &self.reply_to);
        text("To", &self.to);
        text("ReplyToSessionId", &self.reply_to_session_id);
        text("PartitionKey", &self.partition_key);
        text("LockToken", &self.lock_token);
        text("State", &self.state);
        if let Some(t) = self.time_to_live {
            map.insert(
                "TimeToLive",
                serde_json::Number::from_f64(t).map_or(Value::Null, Value::Number),
            );
        }
        for (k, v) in [
            ("ScheduledEnqueueTimeUtc", self.scheduled_enqueue_time_utc),
            ("EnqueuedTimeUtc", self.enqueued_time_utc),
            ("LockedUntilUtc", self.locked_until_utc),
        ] {
            if let Some(t) = v {
                map.insert(k, Value::String(format_http_date(t)));
            }
        }
        if let Some(n) = self.sequence_number {
            map.insert("SequenceNumber", Value::from(n));
        }
        if let Some(n) = self.enqueued_sequence_number {
            map.insert("EnqueuedSequenceNumber", Value::from(n));
        }
        if let Some(n) = self.delivery_count {
            map.insert("DeliveryCount", Value::from(n));
        }
        if let Some(b) = self.force_persistence {
            map.insert("ForcePersistence", Value::Bool(b));
        }
        serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
    }
}

/// `TimeSpan.MaxValue` in seconds: the longest time to live, which means "never".
pub const MAX_TIME_TO_LIVE_SECS: f64 = TimeSpan::MAX.as_secs_f64();

/// A positive .NET TimeSpan string (`[d.]hh:mm:ss[.fffffff]`, digits only) in seconds.
///
/// As .NET's `TimeSpan.Parse`: hours 0-23, minutes and seconds 0-59, at most seven
/// fraction digits, and nothing past `TimeSpan.MaxValue`.
fn parse_dotnet_timespan(text: &str) -> Result<f64, &'static str> {
    const FORM: &str = "expected a TimeSpan such as 0.00:00:40 ([d.]hh:mm:ss[.fffffff])";
    let digits = |s: &str, max_len: usize| -> Result<i64, &'static str> {
        if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FORM);
        }
        s.parse::<i64>().map_err(|_| FORM)
    };
    let text = text.trim();
    let (days, rest) = match text.split_once('.') {
        Some((d, r)) if r.contains(':') && !d.contains(':') => (digits(d, 8)?, r),
        _ => (0, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return Err(FORM);
    };
    let (s, fraction) = match s.split_once('.') {
        Some((s, f)) => (s, f),
        None => (*s, ""),
    };
    let (h, m, s) = (digits(h, 2)?, digits(m, 2)?, digits(s, 2)?);
    if h > 23 || m > 59 || s > 59 {
        return Err("hours must be 0-23, and minutes and seconds 0-59");
    }
    let fraction_ticks = if fraction.is_empty() {
        0
    } else {
        let f = digits(fraction, 7)?;
        f * 10_i64.pow(7 - fraction.len() as u32)
    };
    let ticks =
        i128::from(((days * 24 + h) * 60 + m) * 60 + s) * 10_000_000 + i128::from(fraction_ticks);
    if ticks > i128::from(TimeSpan::MAX.ticks()) {
        return Err("longer than TimeSpan.MaxValue (10675199.02:48:05.4775807)");
    }
    if ticks == 0 {
        return Err("expected a positive TimeSpan");
    }
    Ok(ticks as f64 / 10_000_000.0)
}

/// Reads an RFC 1123 date, with or without the `+0000` that legacy Node appends.
pub fn parse_http_date(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    let t = t.strip_suffix("+0000").unwrap_or(t).trim_end();
    let system = httpdate::parse_http_date(t).ok()?;
    Some(DateTime::<Utc>::from(system))
}

/// Latest instant an RFC 1123 date can carry: 9999-12-31T23:59:59Z (a four-digit year, as
/// .NET's `DateTime.MaxValue`).
const LAST_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// Writes an RFC 1123 date (whole seconds), as the service does. Instants before 1970 or
/// after year 9999 are written as the nearest one that can be (never a panic).
pub fn format_http_date(t: DateTime<Utc>) -> String {
    let secs = u64::try_from(t.timestamp())
        .unwrap_or(0)
        .min(LAST_HTTP_DATE_SECS);
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Header names that are HTTP plumbing or Service Bus protocol, so never custom properties
/// (contract 3.2), lower-case.
const RESERVED_HEADERS: [&str; 30] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "authorization",
    "user-agent",
    "connection",
    "keep-alive",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "expect",
    "date",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "via",
    "cache-control",
    "pragma",
    "origin",
    "referer",
    "cookie",
    "location",
    "server",
    "strict-transport-security",
    "brokerproperties",
    "servicebussupplementaryauthorization",
    "servicebusdlqsupplementaryauthorization",
];

/// Whether a header name cannot carry a custom property: a standard or restricted HTTP
/// header, a Service Bus protocol header, or an `x-ms-`, `x-forwarded-`, `proxy-` or `sec-`
/// one. Browsers add `Sec-Fetch-*` and `Sec-CH-UA*` to every request and forbid scripts
/// to set any `Sec-` header, so none is a property a sender chose.
pub fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str())
        || ["x-ms-", "x-forwarded-", "proxy-", "sec-"]
            .iter()
            .any(|p| lower.starts_with(p))
}

/// A custom property's value, typed the way the broker and receivers read it.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    /// Quoted text, quotes removed, inside kept verbatim.
    String(String),
    /// A bare whole number.
    Int(i64),
    /// A bare decimal number.
    Double(f64),
    /// Bare `true` / `false`.
    Bool(bool),
    /// A quoted RFC 1123 date.
    DateTime(DateTime<Utc>),
}

/// Types a custom property header value (contract 3.2): quoted means string unless the
/// inside is an RFC 1123 date; bare `true`/`false` a bool; else an integer, else a float;
/// anything else unquoted is taken as a string (lenient).
pub fn parse_property(raw: &str) -> PropertyValue {
    let t = raw.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        let inside = &t[1..t.len() - 1];
        return match parse_http_date(inside) {
            Some(d) => PropertyValue::DateTime(d),
            None => PropertyValue::String(inside.to_string()),
        };
    }
    match t {
        "true" => PropertyValue::Bool(true),
        "false" => PropertyValue::Bool(false),
        _ => t
            .parse::<i64>()
            .map(PropertyValue::Int)
            .or_else(|_| t.parse::<f64>().map(PropertyValue::Double))
            .unwrap_or_else(|_| PropertyValue::String(t.to_string())),
    }
}

/// The header text for a value: strings and dates quoted, numbers and bools bare.
pub fn format_property(value: &PropertyValue) -> String {
    match value {
        PropertyValue::String(s) => format!("\"{s}\""),
        PropertyValue::Int(i) => i.to_string(),
        PropertyValue::Double(d) => d.to_string(),
        PropertyValue::Bool(b) => b.to_string(),
        PropertyValue::DateTime(t) => format!("\"{}\"", format_http_date(*t)),
    }
}

/// One message of a batch send.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMessage {
    /// The body bytes (`Body` as UTF-8, or base64-decoded when `IsBodyBase64`).
    pub body: Vec<u8>,
    /// Its broker properties.
    pub broker: BrokerProperties,
    /// Custom properties as (name, header text).
    pub user: Vec<(String, String)>,
    /// `ContentType` given in `BrokerProperties` (a fallback; batches have no per-message header).
    pub content_type: Option<String>,
}

/// Writes a batch body (the inverse of [`parse_batch`]): bodies that are UTF-8 go as text,
/// others base64 with `IsBodyBase64`; custom properties as JSON strings, numbers, booleans
/// (dates as their RFC 1123 text).
pub fn write_batch(messages: &[BatchMessage]) -> String {
    let items: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut item = Map::new();
            match std::str::from_utf8(&m.body) {
                Ok(text) => {
                    item.insert("Body".into(), Value::String(text.to_string()));
                }
                Err(_) => {
                    item.insert(
                        "Body".into(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(&m.body)),
                    );
                    item.insert("IsBodyBase64".into(), Value::Bool(true));
                }
            }
            let broker: Value = serde_json::from_str(&m.broker.to_json()).unwrap_or(Value::Null);
            if broker.as_object().is_some_and(|o| !o.is_empty()) {
                item.insert("BrokerProperties".into(), broker);
            }
            if !m.user.is_empty() {
                let user: Map<String, Value> =
                    m.user
                        .iter()
                        .map(|(k, raw)| {
                            let v = match parse_property(raw) {
                                PropertyValue::String(s) => Value::String(s),
                                PropertyValue::Int(i) => Value::from(i),
                                PropertyValue::Double(d) => serde_json::Number::from_f64(d)
                                    .map_or(Value::Null, Value::Number),
                                PropertyValue::Bool(b) => Value::Bool(b),
                                PropertyValue::DateTime(t) => Value::String(format_http_date(t)),
                            };
                            (k.clone(), v)
                        })
                        .collect();
                item.insert("UserProperties".into(), Value::Object(user));
            }
            Value::Object(item)
        })
        .collect();
    Value::Array(items).to_string()
}

/// Most messages in one batch send. The service refuses larger batches (with a generic
/// error): 4,500 on Basic and Standard, as found by the SDK teams and capped client-side by
/// the JS SDK's `tryAddMessage` (Azure/azure-service-bus#397, azure-sdk-for-js#12041,
/// azure-sdk-for-net#16450).
pub const MAX_BATCH_MESSAGES: usize = 4500;

/// Reads a batch body: a JSON array of `{Body, BrokerProperties, UserProperties}` of at most
/// [`MAX_BATCH_MESSAGES`] messages.
///
/// # Errors
///
/// [`WireError::Value`] naming the message index and field at fault, or the count.
pub fn parse_batch(json: &[u8]) -> Result<Vec<BatchMessage>, WireError> {
    let bad = |reason: String| WireError::Value {
        element: "batch",
        value: String::new(),
        reason,
    };
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| bad(format!("the body is not valid JSON ({e})")))?;
    let Value::Array(items) = value else {
        return Err(bad("the body must be a JSON array of messages".into()));
    };
    if items.len() > MAX_BATCH_MESSAGES {
        return Err(bad(format!(
            "the batch holds {} messages; at most {MAX_BATCH_MESSAGES} may be sent at once",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(bad(format!("message {i} is not a JSON object")));
        };
        let base64 = m
            .get("IsBodyBase64")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let body = match m.get("Body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if base64 => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| {
                    bad(format!(
                        "message {i}: Body is not base64 although IsBodyBase64 is true"
                    ))
                })?,
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(_) => return Err(bad(format!("message {i}: Body must be a string"))),
        };
        let (broker, content_type) = match m.get("BrokerProperties") {
            None | Some(Value::Null) => (BrokerProperties::default(), None),
            Some(Value::Object(b)) => (
                BrokerProperties::from_map(b).map_err(|e| bad(format!("message {i}: {e}")))?,
                b.get("ContentType")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ),
            Some(_) => {
                return Err(bad(format!(
                    "message {i}: BrokerProperties must be an object"
                )));
            }
        };
        let user = match m.get("UserProperties") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(u)) => u
                .iter()
                .map(|(k, v)| {
                    let raw = match v {
                        // Legacy Python sends every value as a string ("1", "false"): typed
                        // as a header would be, so "1" is a number, as it reads it back.
                        Value::String(s) if matches!(parse_property(s), PropertyValue::String(_)) => format!("\"{s}\""),
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return Err(bad(format!("message {i}: UserProperties.{k} must be a string, number or boolean"))),
                    };
                    Ok((k.clone(), raw))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad(format!("message {i}: UserProperties must be an object"))),
        };
        out.push(BatchMessage {
            body,
            broker,
            user,
            content_type,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plumbing_headers_are_never_properties() {
        for name in [
            "Host",
            "brokerproperties",
            "x-ms-version",
            "Sec-Fetch-Mode",
            "sec-ch-ua",
        ] {
            assert!(is_reserved_header(name), "{name}");
        }
        for name in ["color", "Priority", "secret", "x-custom"] {
            assert!(!is_reserved_header(name), "{name}");
        }
    }

    #[test]
    fn broker_properties_as_numbers_or_strings() {
        let a = BrokerProperties::parse_client(r#"{"MessageId":"cap-msg-1","Label":"cap-label","CorrelationId":"corr-A","TimeToLive":3600}"#).unwrap();
        let b = BrokerProperties::parse_client(r#"{"MessageId": "cap-msg-1", "Label": "cap-label", "CorrelationId": "corr-A", "TimeToLive": "3600"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.time_to_live, Some(3600.0));
        let ignored =
            BrokerProperties::parse_client(r#"{"State":"Active","SequenceNumber":5,"Unknown":1}"#)
                .unwrap();
        assert_eq!(ignored, BrokerProperties::default());
        let s = BrokerProperties::parse_client(r#"{"ScheduledEnqueueTimeUtc":"Sun, 06 Nov 1994 08:49:37 GMT","TimeToLiveTimeSpan":"0.00:00:40"}"#).unwrap();
        assert_eq!(
            s.scheduled_enqueue_time_utc.unwrap().timestamp(),
            784_111_777
        );
        assert_eq!(s.time_to_live, Some(40.0));
        for bad in [
            r#"{"TimeToLive":"soon"}"#,
            r#"{"TimeToLive":-1}"#,
            "[1]",
            "{",
            r#"{"ScheduledEnqueueTimeUtc":"tomorrow"}"#,
            r#"{"MessageId":{"a":1}}"#,
        ] {
            let e = BrokerProperties::parse_client(bad).unwrap_err().to_string();
            assert!(e.contains("BrokerProperties"), "{bad}: {e}");
        }
    }

    #[test]
    fn time_to_live_past_the_maximum_means_never_and_bad_spans_are_refused() {
        let ttl = |json: &str| BrokerProperties::parse_client(json).map(|p| p.time_to_live);
        for never in [
            r#"{"TimeToLive":1e20}"#,
            r#"{"TimeToLive":"1e20"}"#,
            r#"{"TimeToLive":1.8e19}"#,
            r#"{"TimeToLiveTimeSpan":"10675199.02:48:05.4775807"}"#,
        ] {
            assert_eq!(ttl(never), Ok(Some(MAX_TIME_TO_LIVE_SECS)), "{never}");
        }
        assert_eq!(
            ttl(r#"{"TimeToLiveTimeSpan":"1.02:03:04.5"}"#),
            Ok(Some(93_784.5))
        );
        assert_eq!(ttl(r#"{"TimeToLiveTimeSpan":"00:00:40"}"#), Ok(Some(40.0)));
        for bad in [
            r#"{"TimeToLive":"inf"}"#,
            r#"{"TimeToLive":"NaN"}"#,
            r#"{"TimeToLive":"1e400"}"#,
            r#"{"TimeToLive":0}"#,
            r#"{"TimeToLiveTimeSpan":"inf.00:00:00"}"#,
            r#"{"TimeToLiveTimeSpan":"00:00:1e300"}"#,
            r#"{"TimeToLiveTimeSpan":"1e400.00:00:00"}"#,
            r#"{"TimeToLiveTimeSpan":"99999999.00:00:00"}"#,
            r#"{"TimeToLiveTimeSpan":"10675199.02:48:05.4775808"}"#,
            r#"{"TimeToLiveTimeSpan":"-1.00:00:00"}"#,
            r#"{"TimeToLiveTimeSpan":"00:61:00"}"#,
            r#"{"TimeToLiveTimeSpan":"00:00:00"}"#,
            r#"{"TimeToLiveTimeSpan":"00:00:01.12345678"}"#,
        ] {
            let e = ttl(bad).unwrap_err().to_string();
            assert!(e.contains("TimeToLive"), "{bad}: {e}");
        }
    }

    #[test]
    fn http_dates_are_written_for_any_instant() {
        let far = chrono::DateTime::<Utc>::MAX_UTC;
        assert_eq!(format_http_date(far), "Fri, 31 Dec 9999 23:59:59 GMT");
        let early = chrono::DateTime::<Utc>::MIN_UTC;
        assert_eq!(format_http_date(early), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn broker_properties_json_in_name_order() {
        let p = BrokerProperties {
            message_id: Some("m".into()),
            delivery_count: Some(1),
            sequence_number: Some(2),
            time_to_live: Some(10.0),
            ..Default::default()
        };
        assert_eq!(
            p.to_json(),
            r#"{"DeliveryCount":1,"MessageId":"m","SequenceNumber":2,"TimeToLive":10.0}"#
        );
    }

    #[test]
    fn property_typing_as_captured() {
        assert_eq!(
            parse_property("\"red\""),
            PropertyValue::String("red".into())
        );
        assert_eq!(parse_property("42"), PropertyValue::Int(42));
        assert_eq!(parse_property("2.5"), PropertyValue::Double(2.5));
        assert_eq!(parse_property("true"), PropertyValue::Bool(true));
        let date =
            PropertyValue::DateTime(parse_http_date("Tue, 02 Jan 2024 03:04:05 GMT").unwrap());
        assert_eq!(parse_property("\"Tue, 02 Jan 2024 03:04:05 GMT\""), date);
        assert_eq!(
            parse_property("\"Tue, 02 Jan 2024 03:04:05 GMT+0000\""),
            date
        );
        assert_eq!(
            parse_property("\"say \"hi\"\""),
            PropertyValue::String("say \"hi\"".into())
        );
        assert_eq!(
            parse_property("\"say \\\"hi\\\"\""),
            PropertyValue::String("say \\\"hi\\\"".into())
        );
        assert_eq!(parse_property("High"), PropertyValue::String("High".into()));
        assert_eq!(format_property(&date), "\"Tue, 02 Jan 2024 03:04:05 GMT\"");
    }

    #[test]
    fn received_fields_and_batch_round_trip() {
        let r = BrokerProperties::parse_received(r#"{"DeliveryCount":2,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Wed, 02 Jul 2014 01:32:27 GMT","Label":"M1","LockToken":"7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547","LockedUntilUtc":"Wed, 02 Jul 2014 01:33:27 GMT","MessageId":"31907572164743c38741631acd554d6f","SequenceNumber":2,"State":"Active","TimeToLive":10}"#).unwrap();
        assert_eq!(
            (r.sequence_number, r.delivery_count, r.state.as_deref()),
            (Some(2), Some(2), Some("Active"))
        );
        assert_eq!(
            r.lock_token.as_deref(),
            Some("7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547")
        );
        assert_eq!(
            r.locked_until_utc.unwrap().timestamp() - r.enqueued_time_utc.unwrap().timestamp(),
            60
        );
        let messages = vec![
            BatchMessage {
                body: b"text".to_vec(),
                broker: BrokerProperties {
                    message_id: Some("a".into()),
                    ..Default::default()
                },
                user: vec![("s".into(), "\"x\"".into()), ("n".into(), "7".into())],
                content_type: None,
            },
            BatchMessage {
                body: vec![0xff, 0x00],
                broker: BrokerProperties::default(),
                user: vec![],
                content_type: None,
            },
        ];
        let parsed = parse_batch(write_batch(&messages).as_bytes()).unwrap();
        assert_eq!(parsed[0].body, b"text");
        assert_eq!(parsed[0].broker.message_id.as_deref(), Some("a"));
        assert_eq!(
            parsed[0].user,
            [
                ("n".to_string(), "7".to_string()),
                ("s".to_string(), "\"x\"".to_string())
            ]
        );
        assert_eq!(parsed[1].body, vec![0xff, 0x00]);
    }

    #[test]
    fn batches_as_captured() {
        let b = parse_batch(br#"[{"Body": "batch-1", "UserProperties": {"i": "1", "color": "red"}, "BrokerProperties": {"MessageId": "b-1"}}, {"Body": "batch-2", "UserProperties": {"i": "2", "flag": "false"}, "BrokerProperties": {"Label": "b"}}, {"Body": "batch-3"}]"#).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].body, b"batch-1");
        assert_eq!(b[0].broker.message_id.as_deref(), Some("b-1"));
        assert_eq!(
            b[0].user,
            [
                ("color".to_string(), "\"red\"".to_string()),
                ("i".to_string(), "1".to_string())
            ]
        );
        assert_eq!(b[1].user[0], ("flag".to_string(), "false".to_string()));
        let b64 = parse_batch(br#"[{"Body":"aGk=","IsBodyBase64":true}]"#).unwrap();
        assert_eq!(b64[0].body, b"hi");
        for bad in [
            &b"{}"[..],
            b"[1]",
            br#"[{"Body":1}]"#,
            br#"[{"BrokerProperties":{"TimeToLive":"x"}}]"#,
            br#"[{"UserProperties":{"a":[1]}}]"#,
            format!("[{}{{}}]", "{},".repeat(MAX_BATCH_MESSAGES)).as_bytes(),
        ] {
            let e = parse_batch(bad).unwrap_err().to_string();
            assert!(e.contains("batch"), "{e}");
        }
    }
}
