//! Rules over AMQP (contract 7.6): `add-rule`, `remove-rule` and `enumerate-rules` on a
//! subscription's `$management` node, mapped to and from the broker's rule descriptions.

use fe2o3_amqp_types::primitives::{OrderedMap, Timestamp, Value};
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use servicebus_wire::rule::{
    CorrelationFilter, DEFAULT_COMPATIBILITY_LEVEL, Filter, KeyValues, RuleAction, TypedValue,
};
use servicebus_wire::xml::XSD_NS;

use super::fields::{field, text};
use crate::model::RuleRecord;

/// Descriptor codes of the rule description types (contract 7.6).
const RULE_DESCRIPTION: u64 = 0x0000_0137_0000_0004;
const SQL_FILTER: u64 = 0x0000_0013_7000_0006;
const TRUE_FILTER: u64 = 0x0000_0013_7000_0007;
const FALSE_FILTER: u64 = 0x0000_0013_7000_0008;
const CORRELATION_FILTER: u64 = 0x0000_0013_7000_0009;
const EMPTY_ACTION: u64 = 0x0000_0137_0000_0005;
const SQL_ACTION: u64 = 0x0000_0137_0000_0006;

/// A correlation property's AMQP value as the broker's typed value.
fn typed(value: &Value) -> Option<TypedValue> {
    let (type_name, text) = match value {
        Value::String(s) => ("string", s.clone()),
        Value::Bool(b) => ("boolean", b.to_string()),
        Value::Byte(n) => ("long", n.to_string()),
        Value::Short(n) => ("long", n.to_string()),
        Value::Int(n) => ("long", n.to_string()),
        Value::Long(n) => ("long", n.to_string()),
        Value::Ubyte(n) => ("long", n.to_string()),
        Value::Ushort(n) => ("long", n.to_string()),
        Value::Uint(n) => ("long", n.to_string()),
        Value::Ulong(n) => ("long", n.to_string()),
        Value::Float(f) => ("double", f.to_string()),
        Value::Double(f) => ("double", f.to_string()),
        Value::Timestamp(t) => (
            "dateTime",
            chrono::DateTime::from_timestamp_millis(t.milliseconds())?.to_rfc3339(),
        ),
        _ => return None,
    };
    Some(TypedValue {
        type_name: type_name.into(),
        type_ns: XSD_NS.into(),
        text,
    })
}

fn properties(map: &OrderedMap<Value, Value>) -> Result<KeyValues, String> {
    match field(map, "properties") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Map(m)) => m
            .iter()
            .map(|(k, v)| {
                let name = match k {
                    Value::String(s) => s.clone(),
                    Value::Symbol(s) => s.0.clone(),
                    _ => return Err("correlation property names must be strings".to_string()),
                };
                let value =
                    typed(v).ok_or_else(|| format!("property '{name}' has no usable type"))?;
                Ok((name, value))
            })
            .collect(),
        Some(_) => Err("'properties' must be a map".into()),
    }
}

/// The broker's rule for an `add-rule` request's `rule-description` map.
///
/// # Errors
///
/// Why the description is not one (for a `400`).
pub(crate) fn rule_from(
    description: &OrderedMap<Value, Value>,
) -> Result<servicebus_wire::RuleDescription, String> {
    let filter = if let Some(Value::Map(sql)) = field(description, "sql-filter") {
        let expression = text(sql, "expression").ok_or("a sql-filter needs an expression")?;
        match expression.trim() {
            "1=1" => Filter::True,
            "1=0" => Filter::False,
            _ => Filter::Sql {
                expression,
                compatibility_level: DEFAULT_COMPATIBILITY_LEVEL,
                parameters: Vec::new(),
                requires_preprocessing: None,
            },
        }
    } else if let Some(Value::Map(c)) = field(description, "correlation-filter") {
        Filter::Correlation(CorrelationFilter {
            correlation_id: text(c, "correlation-id"),
            message_id: text(c, "message-id"),
            to: text(c, "to"),
            reply_to: text(c, "reply-to"),
            label: text(c, "label"),
            session_id: text(c, "session-id"),
            reply_to_session_id: text(c, "reply-to-session-id"),
            content_type: text(c, "content-type"),
            properties: properties(c)?,
        })
    } else {
        return Err("a rule-description needs a sql-filter or a correlation-filter".into());
    };
    let action = match field(description, "sql-rule-action") {
        Some(Value::Map(a)) => match text(a, "expression") {
            Some(expression) => RuleAction::Sql {
                expression,
                compatibility_level: DEFAULT_COMPATIBILITY_LEVEL,
                parameters: Vec::new(),
            },
            None => RuleAction::Empty,
        },
        _ => RuleAction::Empty,
    };
    Ok(servicebus_wire::RuleDescription {
        filter,
        action,
        name: text(description, "rule-name"),
    })
}

fn described(code: u64, fields: Vec<Value>) -> Value {
    Value::Described(Box::new(Described {
        descriptor: Descriptor::Code(code),
        value: Value::List(fields),
    }))
}

fn optional(text: &Option<String>) -> Value {
    text.clone().map_or(Value::Null, Value::String)
}

fn amqp_value(value: &TypedValue) -> Value {
    match value.type_name.as_str() {
        "boolean" => value.text.parse().map_or(Value::Null, Value::Bool),
        "int" | "long" | "short" | "byte" | "unsignedInt" | "unsignedShort" | "unsignedByte" => {
            value.text.parse().map_or(Value::Null, Value::Long)
        }
        "double" | "float" | "decimal" => value
            .text
            .parse::<f64>()
            .map_or(Value::Null, |f| Value::Double(f.into())),
        _ => Value::String(value.text.clone()),
    }
}

/// A stored rule as `enumerate-rules` returns it: a described rule description.
pub(crate) fn described_rule(record: &RuleRecord) -> Value {
    let filter = match &record.rule.filter {
        Filter::Sql { expression, .. } => described(
            SQL_FILTER,
            vec![Value::String(expression.clone()), Value::Int(20)],
        ),
        Filter::True => described(
            TRUE_FILTER,
            vec![Value::String("1=1".into()), Value::Int(20)],
        ),
        Filter::False => described(
            FALSE_FILTER,
            vec![Value::String("1=0".into()), Value::Int(20)],
        ),
        Filter::Correlation(c) => {
            let mut props = OrderedMap::new();
            for (name, value) in &c.properties {
                props.insert(Value::String(name.clone()), amqp_value(value));
            }
            described(
                CORRELATION_FILTER,
                vec![
                    optional(&c.correlation_id),
                    optional(&c.message_id),
                    optional(&c.to),
                    optional(&c.reply_to),
                    optional(&c.label),
                    optional(&c.session_id),
                    optional(&c.reply_to_session_id),
                    optional(&c.content_type),
                    Value::Map(props),
                ],
            )
        }
    };
    let action = match &record.rule.action {
        RuleAction::Empty => described(EMPTY_ACTION, Vec::new()),
        RuleAction::Sql { expression, .. } => described(
            SQL_ACTION,
            vec![Value::String(expression.clone()), Value::Int(20)],
        ),
    };
    described(
        RULE_DESCRIPTION,
        vec![
            filter,
            action,
            Value::String(record.name.clone()),
            Value::Timestamp(Timestamp::from_milliseconds(
                record.created_at.timestamp_millis(),
            )),
        ],
    )
}
