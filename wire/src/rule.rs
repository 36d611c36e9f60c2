//! Rule descriptions: filters and actions as XML (contract 4.6, 4.7).
//!
//! The SQL text of filters and actions is kept as given here; the emulator's `filter` layer
//! parses and evaluates it.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::TimeSpan;
use crate::error::WireError;
use crate::time::{format_timestamp, parse_timestamp};
use crate::xml::{Element, SB_NS, XSD_NS, XSI_NS, boolean, escape, escape_attr, resolve_qname};

/// Longest SQL filter or action expression.
pub const MAX_SQL_EXPRESSION_LEN: usize = 1024;
/// Compatibility level the service writes.
pub const DEFAULT_COMPATIBILITY_LEVEL: u32 = 20;

/// A typed value of a filter parameter or correlation property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypedValue {
    /// The `xsi:type` local name as sent (`string`, `int`, `long`, `double`, ...).
    pub type_name: String,
    /// Namespace of that type name, written back as received.
    pub type_ns: String,
    /// The value's text.
    pub text: String,
}

/// The broad class of a [`TypedValue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueClass {
    /// Text.
    String,
    /// A whole number (Int64 in filters).
    Integer,
    /// A floating-point number.
    Double,
    /// `true` or `false`.
    Boolean,
    /// A point in time.
    DateTime,
    /// A time span.
    Duration,
}

impl TypedValue {
    /// The value's class.
    pub fn class(&self) -> Option<ValueClass> {
        Some(match self.type_name.as_str() {
            "string" | "char" | "guid" | "anyURI" => ValueClass::String,
            "int" | "long" | "short" | "byte" | "unsignedInt" | "unsignedLong"
            | "unsignedShort" | "unsignedByte" => ValueClass::Integer,
            "double" | "float" | "decimal" => ValueClass::Double,
            "boolean" => ValueClass::Boolean,
            "dateTime" => ValueClass::DateTime,
            "duration" => ValueClass::Duration,
            _ => return None,
        })
    }

    fn parse(element: &Element, what: &'static str) -> Result<Self, WireError> {
        let text = element.text.clone();
        let (type_ns, type_name) = match element.attr(XSI_NS, "type") {
            Some(qname) => {
                let (ns, local) = resolve_qname(element, qname);
                (ns.unwrap_or(XSD_NS).to_string(), local.to_string())
            }
            None => (XSD_NS.to_string(), "string".to_string()),
        };
        let value = TypedValue {
            type_name,
            type_ns,
            text,
        };
        let bad = |why: &str| Err(WireError::value(what, &value.text, why));
        let t = value.text.trim();
        match value.class() {
            None => return bad(&format!("unsupported value type '{}'", value.type_name)),
            Some(ValueClass::String) => {}
            Some(ValueClass::Integer) if t.parse::<i64>().is_err() => {
                return bad("not a whole number");
            }
            Some(ValueClass::Double) if t.parse::<f64>().is_err() => return bad("not a number"),
            Some(ValueClass::Boolean) => {
                boolean(what, t)?;
            }
            Some(ValueClass::DateTime) if parse_timestamp(t).is_none() => {
                return bad("not an ISO 8601 date and time");
            }
            Some(ValueClass::Duration) if TimeSpan::parse(t).is_err() => {
                return bad("not an xs:duration");
            }
            Some(_) => {}
        }
        Ok(value)
    }

    fn write(&self, out: &mut String) {
        let _ = write!(
            out,
            r#"<Value i:type="d6p1:{}" xmlns:d6p1="{}">{}</Value>"#,
            escape_attr(&self.type_name),
            escape_attr(&self.type_ns),
            escape(&self.text)
        );
    }

    /// A string value.
    pub fn string(text: &str) -> Self {
        TypedValue {
            type_name: "string".into(),
            type_ns: XSD_NS.into(),
            text: text.into(),
        }
    }
}

/// Named typed values (`<Parameters>` or correlation `<Properties>`), in order.
pub type KeyValues = Vec<(String, TypedValue)>;

/// The correlation filter's system-property conditions; `None` means "not set".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // each field is the element of the same name
pub struct CorrelationFilter {
    pub correlation_id: Option<String>,
    pub message_id: Option<String>,
    pub to: Option<String>,
    pub reply_to: Option<String>,
    pub label: Option<String>,
    pub session_id: Option<String>,
    pub reply_to_session_id: Option<String>,
    pub content_type: Option<String>,
    /// User properties that must exist and be equal.
    pub properties: KeyValues,
}

const CORRELATION_ELEMENTS: [&str; 8] = [
    "CorrelationId",
    "MessageId",
    "To",
    "ReplyTo",
    "Label",
    "SessionId",
    "ReplyToSessionId",
    "ContentType",
];

impl CorrelationFilter {
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "CorrelationId" => &mut self.correlation_id,
            "MessageId" => &mut self.message_id,
            "To" => &mut self.to,
            "ReplyTo" => &mut self.reply_to,
            "Label" => &mut self.label,
            "SessionId" => &mut self.session_id,
            "ReplyToSessionId" => &mut self.reply_to_session_id,
            "ContentType" => &mut self.content_type,
            _ => return None,
        })
    }
}

/// A rule's filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Filter {
    /// A SQL expression over message properties.
    Sql {
        /// The expression text.
        expression: String,
        /// `CompatibilityLevel` (20).
        compatibility_level: u32,
        /// `@name` parameters.
        parameters: KeyValues,
        /// `RequiresPreprocessing`, echoed when sent.
        requires_preprocessing: Option<bool>,
    },
    /// Matches everything (`1=1`).
    True,
    /// Matches nothing (`1=0`).
    False,
    /// Exact matches on system and user properties.
    Correlation(CorrelationFilter),
}

/// A rule's action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RuleAction {
    /// No change to the message.
    Empty,
    /// `SET`/`REMOVE` statements.
    Sql {
        /// The statements' text.
        expression: String,
        /// `CompatibilityLevel` (20).
        compatibility_level: u32,
        /// `@name` parameters.
        parameters: KeyValues,
    },
}

/// A rule: filter, action and (when sent) name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleDescription {
    /// The filter (TrueFilter when absent).
    pub filter: Filter,
    /// The action (EmptyRuleAction when absent).
    pub action: RuleAction,
    /// `<Name>`, when the request carried one.
    pub name: Option<String>,
}

impl Default for RuleDescription {
    /// The `$Default` rule: TrueFilter, no action.
    fn default() -> Self {
        RuleDescription {
            filter: Filter::True,
            action: RuleAction::Empty,
            name: None,
        }
    }
}

impl RuleDescription {
    /// A rule with this SQL filter (compatibility level 20, no parameters) and no action.
    pub fn sql(expression: impl Into<String>) -> Self {
        RuleDescription {
            filter: Filter::Sql {
                expression: expression.into(),
                compatibility_level: 20,
                parameters: vec![],
                requires_preprocessing: None,
            },
            action: RuleAction::Empty,
            name: None,
        }
    }

    /// Reads a `RuleDescription` (or `DefaultRuleDescription`) element, leniently: any
    /// prefix for `type`, legacy action type names, missing filter or action.
    ///
    /// # Errors
    ///
    /// [`WireError::Value`] for an unknown filter or action type, a missing or too long
    /// SQL expression, or a badly typed value.
    pub fn parse(element: &Element) -> Result<Self, WireError> {
        let filter = match element.child("Filter") {
            Some(f) => parse_filter(f)?,
            None => Filter::True,
        };
        let action = match element.child("Action") {
            Some(a) => parse_action(a)?,
            None => RuleAction::Empty,
        };
        let name = element
            .child("Name")
            .map(|n| n.trimmed_text().to_string())
            .filter(|n| !n.is_empty());
        Ok(RuleDescription {
            filter,
            action,
            name,
        })
    }

    /// Writes the rule as the service answers (`Filter, Action, CreatedAt, Name`).
    pub fn to_response_xml(&self, name: &str, created_at: DateTime<Utc>) -> String {
        let mut out = format!(
            r#"<RuleDescription xmlns="{SB_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">"#
        );
        self.write_filter_and_action(&mut out);
        let _ = write!(
            out,
            "<CreatedAt>{}</CreatedAt><Name>{}</Name></RuleDescription>",
            format_timestamp(created_at),
            escape(name)
        );
        out
    }

    /// Writes the rule as a client sends it (`Filter, Action, Name`) under `element`;
    /// `with_namespaces` declares the namespaces (for a top-level `RuleDescription`).
    pub fn to_inner_xml(&self, element: &str, with_namespaces: bool) -> String {
        let mut out = if with_namespaces {
            format!(
                r#"<{element} xmlns="{SB_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">"#
            )
        } else {
            format!("<{element}>")
        };
        self.write_filter_and_action(&mut out);
        if let Some(name) = &self.name {
            let _ = write!(out, "<Name>{}</Name>", escape(name));
        }
        let _ = write!(out, "</{element}>");
        out
    }

    fn write_filter_and_action(&self, out: &mut String) {
        match &self.filter {
            Filter::True | Filter::False => {
                let (ty, sql) = if self.filter == Filter::True {
                    ("TrueFilter", "1=1")
                } else {
                    ("FalseFilter", "1=0")
                };
                let _ = write!(
                    out,
                    r#"<Filter i:type="{ty}"><SqlExpression>{sql}</SqlExpression><CompatibilityLevel>{DEFAULT_COMPATIBILITY_LEVEL}</CompatibilityLevel></Filter>"#
                );
            }
            Filter::Sql {
                expression,
                compatibility_level,
                parameters,
                requires_preprocessing,
            } => {
                let _ = write!(
                    out,
                    r#"<Filter i:type="SqlFilter"><SqlExpression>{}</SqlExpression><CompatibilityLevel>{compatibility_level}</CompatibilityLevel>"#,
                    escape(expression)
                );
                write_key_values(out, "Parameters", parameters, false);
                if let Some(p) = requires_preprocessing {
                    let _ = write!(out, "<RequiresPreprocessing>{p}</RequiresPreprocessing>");
                }
                out.push_str("</Filter>");
            }
            Filter::Correlation(c) => {
                out.push_str(r#"<Filter i:type="CorrelationFilter">"#);
                let mut c = c.clone();
                for name in CORRELATION_ELEMENTS {
                    if let Some(Some(v)) = c.slot(name).map(|s| s.take()) {
                        let _ = write!(out, "<{name}>{}</{name}>", escape(&v));
                    }
                }
                write_key_values(out, "Properties", &c.properties, true);
                out.push_str("</Filter>");
            }
        }
        match &self.action {
            RuleAction::Empty => out.push_str(r#"<Action i:type="EmptyRuleAction"/>"#),
            RuleAction::Sql {
                expression,
                compatibility_level,
                parameters,
            } => {
                let _ = write!(
                    out,
                    r#"<Action i:type="SqlRuleAction"><SqlExpression>{}</SqlExpression><CompatibilityLevel>{compatibility_level}</CompatibilityLevel>"#,
                    escape(expression)
                );
                write_key_values(out, "Parameters", parameters, false);
                out.push_str("</Action>");
            }
        }
    }
}

fn write_key_values(out: &mut String, element: &str, values: &KeyValues, always: bool) {
    if values.is_empty() && !always {
        return;
    }
    let _ = write!(out, "<{element}>");
    for (key, value) in values {
        let _ = write!(out, "<KeyValueOfstringanyType><Key>{}</Key>", escape(key));
        value.write(out);
        out.push_str("</KeyValueOfstringanyType>");
    }
    let _ = write!(out, "</{element}>");
}

fn parse_key_values(element: Option<&Element>, what: &'static str) -> Result<KeyValues, WireError> {
    let Some(element) = element else {
        return Ok(Vec::new());
    };
    let mut values = Vec::new();
    for pair in element
        .children
        .iter()
        .filter(|c| c.name == "KeyValueOfstringanyType")
    {
        let key = pair
            .child("Key")
            .map(|k| k.trimmed_text().to_string())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| WireError::value(what, "", "an entry has no Key"))?;
        let value = pair
            .child("Value")
            .ok_or_else(|| WireError::value(what, &key, "an entry has no Value"))?;
        values.push((key, TypedValue::parse(value, what)?));
    }
    Ok(values)
}

fn sql_text(element: &Element, what: &'static str) -> Result<String, WireError> {
    let text = element
        .child("SqlExpression")
        .map(|e| e.trimmed_text().to_string())
        .unwrap_or_default();
    if text.is_empty() {
        return Err(WireError::value(
            what,
            "",
            "SqlExpression is missing or empty",
        ));
    }
    if text.chars().count() > MAX_SQL_EXPRESSION_LEN {
        return Err(WireError::value(
            what,
            &text,
            "SqlExpression is longer than 1024 characters",
        ));
    }
    Ok(text)
}

fn compatibility_level(element: &Element, what: &'static str) -> Result<u32, WireError> {
    match element
        .child("CompatibilityLevel")
        .map(Element::trimmed_text)
    {
        None | Some("") => Ok(DEFAULT_COMPATIBILITY_LEVEL),
        Some(t) => t
            .parse()
            .map_err(|_| WireError::value(what, t, "CompatibilityLevel is not a whole number")),
    }
}

fn parse_filter(element: &Element) -> Result<Filter, WireError> {
    let ty = match element.instance_type() {
        Some(t) => t.to_string(),
        None if element.child("SqlExpression").is_some() => "SqlFilter".into(),
        None => "CorrelationFilter".into(),
    };
    match ty.as_str() {
        "TrueFilter" => Ok(Filter::True),
        "FalseFilter" => Ok(Filter::False),
        "SqlFilter" => Ok(Filter::Sql {
            expression: sql_text(element, "Filter")?,
            compatibility_level: compatibility_level(element, "Filter")?,
            parameters: parse_key_values(element.child("Parameters"), "Filter")?,
            requires_preprocessing: element
                .child("RequiresPreprocessing")
                .map(|e| boolean("RequiresPreprocessing", e.trimmed_text()))
                .transpose()?,
        }),
        "CorrelationFilter" => {
            let mut c = CorrelationFilter::default();
            for child in &element.children {
                if let Some(slot) = c.slot(&child.name) {
                    *slot = Some(child.text.clone()).filter(|t| !t.is_empty());
                }
            }
            c.properties = parse_key_values(element.child("Properties"), "Filter")?;
            Ok(Filter::Correlation(c))
        }
        other => Err(WireError::value(
            "Filter",
            other,
            "unknown filter type (expected SqlFilter, CorrelationFilter, TrueFilter or FalseFilter)",
        )),
    }
}

fn parse_action(element: &Element) -> Result<RuleAction, WireError> {
    match element.instance_type().unwrap_or("EmptyRuleAction") {
        "EmptyRuleAction" => Ok(RuleAction::Empty),
        // Legacy Node writes SqlFilterExpression and old docstrings SqlFilterAction.
        "SqlRuleAction" | "SqlFilterExpression" | "SqlFilterAction" => Ok(RuleAction::Sql {
            expression: sql_text(element, "Action")?,
            compatibility_level: compatibility_level(element, "Action")?,
            parameters: parse_key_values(element.child("Parameters"), "Action")?,
        }),
        other => Err(WireError::value(
            "Action",
            other,
            "unknown action type (expected SqlRuleAction or EmptyRuleAction)",
        )),
    }
}
