//! The official emulator's `Config.json`: its entities, read into descriptions and rules
//! with Azure's defaults (see the README's "Config.json").

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use servicebus_wire::rule::{CorrelationFilter, DEFAULT_COMPATIBILITY_LEVEL, KeyValues};
use servicebus_wire::{
    EntityDescription, EntityKind, Filter, RuleAction, RuleDescription, TypedValue,
};

use super::ConfigError;
/// A queue or topic with its properties, as written in Config.json.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEntity {
    name: String,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
    #[serde(default)]
    subscriptions: Vec<RawEntity>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRule {
    name: String,
    properties: BTreeMap<String, Value>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNamespace {
    name: String,
    #[serde(default)]
    queues: Vec<RawEntity>,
    #[serde(default)]
    topics: Vec<RawEntity>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawUserConfig {
    namespaces: Vec<RawNamespace>,
    #[serde(default)]
    logging: Option<Value>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    user_config: RawUserConfig,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

/// A declared subscription: settings and rules (none: the `$Default` rule).
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredSubscription {
    /// Name.
    pub name: String,
    /// Settings.
    pub description: EntityDescription,
    /// Rules by name.
    pub rules: Vec<(String, RuleDescription)>,
}

/// A declared topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTopic {
    /// Name.
    pub name: String,
    /// Settings.
    pub description: EntityDescription,
    /// Its subscriptions.
    pub subscriptions: Vec<DeclaredSubscription>,
}

/// The entities of a Config.json, validated, plus what was ignored in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFile {
    /// Queues by name.
    pub queues: Vec<(String, EntityDescription)>,
    /// Topics.
    pub topics: Vec<DeclaredTopic>,
    /// Fields that were tolerated but not used, by location (reported at start-up).
    pub ignored: Vec<String>,
}

impl ConfigFile {
    /// Reads and validates a Config.json file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and the first problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses Config.json text. Absent properties take Azure Service Bus defaults.
    ///
    /// # Errors
    ///
    /// A message saying where and what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| format!("{e}"))?;
        let mut ignored = Vec::new();
        note_extra(&mut ignored, "", &raw.extra);
        note_extra(&mut ignored, "UserConfig", &raw.user_config.extra);
        if raw.user_config.logging.is_some() {
            ignored.push("UserConfig.Logging (logs go through RUST_LOG)".into());
        }
        let [namespace] = raw.user_config.namespaces.as_slice() else {
            return Err(format!(
                "UserConfig.Namespaces must hold exactly one namespace, found {}",
                raw.user_config.namespaces.len()
            ));
        };
        let ns_at = format!("namespace '{}'", namespace.name);
        note_extra(&mut ignored, &ns_at, &namespace.extra);
        let mut queues = Vec::new();
        for q in &namespace.queues {
            let at = format!("{ns_at}, queue '{}'", q.name);
            note_extra(&mut ignored, &at, &q.extra);
            queues.push((
                q.name.clone(),
                description(EntityKind::Queue, &q.properties, &at, &mut ignored)?,
            ));
        }
        let mut topics = Vec::new();
        for t in &namespace.topics {
            let at = format!("{ns_at}, topic '{}'", t.name);
            note_extra(&mut ignored, &at, &t.extra);
            let mut subscriptions = Vec::new();
            for s in &t.subscriptions {
                let sat = format!("{at}, subscription '{}'", s.name);
                note_extra(&mut ignored, &sat, &s.extra);
                let mut rules = Vec::new();
                for r in &s.rules {
                    let rat = format!("{sat}, rule '{}'", r.name);
                    note_extra(&mut ignored, &rat, &r.extra);
                    rules.push((r.name.clone(), rule(&r.properties, &rat, &mut ignored)?));
                }
                subscriptions.push(DeclaredSubscription {
                    name: s.name.clone(),
                    description: description(
                        EntityKind::Subscription,
                        &s.properties,
                        &sat,
                        &mut ignored,
                    )?,
                    rules,
                });
            }
            topics.push(DeclaredTopic {
                name: t.name.clone(),
                description: description(EntityKind::Topic, &t.properties, &at, &mut ignored)?,
                subscriptions,
            });
        }
        Ok(ConfigFile {
            queues,
            topics,
            ignored,
        })
    }
}

fn note_extra(ignored: &mut Vec<String>, at: &str, extra: &BTreeMap<String, Value>) {
    for key in extra.keys() {
        ignored.push(if at.is_empty() {
            key.clone()
        } else {
            format!("{at}: {key}")
        });
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn description(
    kind: EntityKind,
    properties: &BTreeMap<String, Value>,
    at: &str,
    ignored: &mut Vec<String>,
) -> Result<EntityDescription, String> {
    let mut d = EntityDescription::defaults(kind);
    for (name, value) in properties {
        let text = value_text(value)
            .ok_or_else(|| format!("{at}: property {name} must be a string, number or boolean"))?;
        // The official file writes "" for unset forwarding targets.
        if text.is_empty() && name.starts_with("Forward") {
            continue;
        }
        if !d
            .apply_setting(name, &text)
            .map_err(|e| format!("{at}: {e}"))?
        {
            ignored.push(format!("{at}: property {name}"));
        }
    }
    d.validate().map_err(|e| format!("{at}: {e}"))?;
    Ok(d)
}

fn typed(v: &Value, at: &str, name: &str) -> Result<TypedValue, String> {
    let xsd = servicebus_wire::xml::XSD_NS.to_string();
    let (type_name, text) = match v {
        Value::String(s) => ("string", s.clone()),
        Value::Bool(b) => ("boolean", b.to_string()),
        Value::Number(n) if n.is_i64() => ("long", n.to_string()),
        Value::Number(n) => ("double", n.to_string()),
        _ => {
            return Err(format!(
                "{at}: property {name} must be a string, number or boolean"
            ));
        }
    };
    Ok(TypedValue {
        type_name: type_name.into(),
        type_ns: xsd,
        text,
    })
}

fn rule(
    properties: &BTreeMap<String, Value>,
    at: &str,
    ignored: &mut Vec<String>,
) -> Result<RuleDescription, String> {
    let get = |name: &str| properties.get(name);
    let sql_of = |v: Option<&Value>, what: &str| -> Result<String, String> {
        v.and_then(|o| o.get("SqlExpression"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{at}: {what}.SqlExpression is missing or empty"))
    };
    let filter = match get("FilterType").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("Sql") => Filter::Sql {
            expression: sql_of(get("SqlFilter"), "SqlFilter")?,
            compatibility_level: DEFAULT_COMPATIBILITY_LEVEL,
            parameters: KeyValues::new(),
            requires_preprocessing: None,
        },
        Some(t) if t.eq_ignore_ascii_case("Correlation") => {
            let raw = get("CorrelationFilter")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    format!("{at}: FilterType Correlation needs a CorrelationFilter object")
                })?;
            let mut c = CorrelationFilter::default();
            for (name, value) in raw {
                let text = || {
                    value_text(value)
                        .ok_or_else(|| format!("{at}: CorrelationFilter.{name} must be a string"))
                };
                match name.as_str() {
                    "ContentType" => c.content_type = Some(text()?),
                    "CorrelationId" => c.correlation_id = Some(text()?),
                    "Label" => c.label = Some(text()?),
                    "MessageId" => c.message_id = Some(text()?),
                    "ReplyTo" => c.reply_to = Some(text()?),
                    "ReplyToSessionId" => c.reply_to_session_id = Some(text()?),
                    "SessionId" => c.session_id = Some(text()?),
                    "To" => c.to = Some(text()?),
                    "Properties" => {
                        let props = value.as_object().ok_or_else(|| {
                            format!("{at}: CorrelationFilter.Properties must be an object")
                        })?;
                        for (k, v) in props {
                            c.properties.push((k.clone(), typed(v, at, k)?));
                        }
                    }
                    other => ignored.push(format!("{at}: CorrelationFilter.{other}")),
                }
            }
            Filter::Correlation(c)
        }
        Some(other) => {
            return Err(format!(
                "{at}: FilterType '{other}' is not Sql or Correlation"
            ));
        }
        None => return Err(format!("{at}: FilterType is missing (Sql or Correlation)")),
    };
    let action = match get("Action") {
        None | Some(Value::Null) => RuleAction::Empty,
        Some(a) => RuleAction::Sql {
            expression: sql_of(Some(a), "Action")?,
            compatibility_level: DEFAULT_COMPATIBILITY_LEVEL,
            parameters: KeyValues::new(),
        },
    };
    for key in properties.keys() {
        if !["FilterType", "SqlFilter", "CorrelationFilter", "Action"].contains(&key.as_str()) {
            ignored.push(format!("{at}: property {key}"));
        }
    }
    Ok(RuleDescription {
        filter,
        action,
        name: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use servicebus_wire::TimeSpan;

    #[test]
    fn official_shape_example() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/official-emulator-config/Config.json"
        ))
        .unwrap();
        let config = ConfigFile::parse(&text).unwrap();
        let (name, queue) = &config.queues[0];
        assert_eq!(name, "orders");
        assert!(queue.dead_lettering_on_message_expiration);
        assert_eq!(queue.max_delivery_count, 3);
        assert_eq!(queue.default_message_time_to_live, TimeSpan::from_mins(60));
        let topic = &config.topics[0];
        assert_eq!(topic.name, "chat");
        let sub = &topic.subscriptions[0];
        assert_eq!(sub.rules.len(), 2);
        assert!(
            matches!(&sub.rules[0].1.filter, Filter::Sql { expression, .. } if expression.starts_with("room = '42'"))
        );
        assert!(
            matches!(&sub.rules[0].1.action, RuleAction::Sql { expression, .. } if expression == "SET audited = TRUE")
        );
        let Filter::Correlation(c) = &sub.rules[1].1.filter else {
            panic!()
        };
        assert_eq!(c.to.as_deref(), Some("node-a"));
        assert_eq!(c.properties[0].0, "kind");
        assert_eq!(
            config.ignored,
            ["UserConfig.Logging (logs go through RUST_LOG)"]
        );
    }

    #[test]
    fn unknown_fields_are_reported_and_errors_located() {
        let text = r#"{"UserConfig":{"Namespaces":[{"Name":"n","Queues":[{"Name":"q","Properties":{"Color":"red","MaxDeliveryCount":2},"Extra":1}],"Topics":[]}]},"Version":2}"#;
        let config = ConfigFile::parse(text).unwrap();
        assert_eq!(config.queues[0].1.max_delivery_count, 2);
        assert_eq!(
            config.ignored,
            [
                "Version",
                "namespace 'n', queue 'q': Extra",
                "namespace 'n', queue 'q': property Color"
            ]
        );
        let bad = r#"{"UserConfig":{"Namespaces":[{"Name":"n","Queues":[{"Name":"q","Properties":{"LockDuration":"soon"}}]}]}}"#;
        let e = ConfigFile::parse(bad).unwrap_err();
        assert!(e.contains("queue 'q'") && e.contains("LockDuration"), "{e}");
        assert!(ConfigFile::parse("{").is_err());
        assert!(
            ConfigFile::parse(r#"{"UserConfig":{"Namespaces":[]}}"#)
                .unwrap_err()
                .contains("exactly one")
        );
    }
}
