//! Rule filters and actions: the SQL subset of Service Bus, correlation filters, True/False.
//!
//! Rules are compiled when they are created (so a rule that does not parse is refused with
//! the position of the error) and evaluated against messages at send time.
#![doc = include_str!("GRAMMAR.md")]

pub mod ast;
mod eval;
mod lexer;
mod like;
mod parser;
pub mod value;

#[cfg(test)]
mod tests;

use std::fmt;

use servicebus_wire::rule::{KeyValues, ValueClass};
use servicebus_wire::{CorrelationFilter, Filter, RuleAction, RuleDescription, TypedValue};

use ast::{Expr, Property, Scope, Statement};
use eval::{Parameters, compare, evaluate};
use like::Patterns;
pub use parser::MAX_ACTION_STATEMENTS;
use value::{Properties, PropertiesMut, SystemProperty, Value};

/// A syntax error, at a 1-based character position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where (1-based, in characters).
    pub position: usize,
    /// What was expected or found.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

/// A rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter's SQL does not parse.
    #[error("the SQL filter expression is invalid {0}")]
    Filter(ParseError),
    /// The action's SQL does not parse.
    #[error("the SQL rule action is invalid {0}")]
    Action(ParseError),
    /// It parses but names something that does not exist or cannot be set.
    #[error("{0}")]
    Invalid(String),
}

/// A failure while evaluating against one message (the service dead-letters the message when
/// the subscription asks for it, else the rule does not match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// Int64 division or modulo by zero.
    #[error("division by zero")]
    DivideByZero,
    /// Int64 overflow.
    #[error("arithmetic overflow")]
    Overflow,
}

/// Parses a filter expression (no binding, no name checks): for tools and tests.
///
/// # Errors
///
/// The syntax error with its position.
pub fn parse_expression(text: &str) -> Result<Expr, ParseError> {
    parser::parse_filter(text)
}

/// Parses an action's statements: for tools and tests.
///
/// # Errors
///
/// The syntax error with its position.
pub fn parse_statements(text: &str) -> Result<Vec<Statement>, ParseError> {
    parser::parse_action(text)
}

#[derive(Debug, Clone, PartialEq)]
enum CompiledFilter {
    True,
    False,
    Sql(Expr, Parameters, Patterns),
    Correlation(Box<CorrelationFilter>, Vec<(String, Value)>),
}

/// A rule ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    filter: CompiledFilter,
    action: Option<(Vec<Statement>, Parameters, Patterns)>,
}

/// Longest SQL filter or action text, in characters (the service's quota: "Maximum length
/// of filter condition string: 1,024", and the same for actions).
pub const MAX_SQL_LENGTH: usize = 1024;

fn check_length(expression: &str, what: &str) -> Result<(), FilterError> {
    let length = expression.chars().count();
    if length > MAX_SQL_LENGTH {
        return Err(FilterError::Invalid(format!(
            "the SQL {what} is {length} characters long; at most {MAX_SQL_LENGTH} are allowed"
        )));
    }
    Ok(())
}

/// Compiles a rule: parses its SQL, binds parameters, checks system property names.
///
/// # Errors
///
/// [`FilterError`] saying what is wrong and where.
pub fn compile(rule: &RuleDescription) -> Result<CompiledRule, FilterError> {
    let filter = match &rule.filter {
        Filter::True => CompiledFilter::True,
        Filter::False => CompiledFilter::False,
        Filter::Sql {
            expression,
            parameters,
            ..
        } => {
            check_length(expression, "filter")?;
            let expr = parser::parse_filter(expression).map_err(FilterError::Filter)?;
            let params = bind(parameters)?;
            check_expr(&expr, &params)?;
            let patterns = Patterns::of([&expr], &params);
            CompiledFilter::Sql(expr, params, patterns)
        }
        Filter::Correlation(c) => {
            let properties = c
                .properties
                .iter()
                .map(|(k, v)| Ok((k.clone(), typed(v)?)))
                .collect::<Result<_, FilterError>>()?;
            CompiledFilter::Correlation(Box::new(c.clone()), properties)
        }
    };
    let action = match &rule.action {
        RuleAction::Empty => None,
        RuleAction::Sql {
            expression,
            parameters,
            ..
        } => {
            check_length(expression, "action")?;
            let statements = parser::parse_action(expression).map_err(FilterError::Action)?;
            let params = bind(parameters)?;
            for s in &statements {
                match s {
                    Statement::Set(p, e) => {
                        check_settable(p)?;
                        check_expr(e, &params)?;
                    }
                    Statement::Remove(p) => check_settable(p)?,
                }
            }
            let patterns = Patterns::of_statements(&statements, &params);
            Some((statements, params, patterns))
        }
    };
    Ok(CompiledRule { filter, action })
}

fn typed(v: &TypedValue) -> Result<Value, FilterError> {
    let text = v.text.trim();
    let bad = || {
        FilterError::Invalid(format!(
            "the value '{}' is not a valid {}",
            v.text, v.type_name
        ))
    };
    Ok(match v.class() {
        Some(ValueClass::String) | None => Value::String(v.text.clone()),
        Some(ValueClass::Integer) => Value::Int(text.parse().map_err(|_| bad())?),
        Some(ValueClass::Double) => Value::Double(text.parse().map_err(|_| bad())?),
        Some(ValueClass::Boolean) => Value::Bool(text.eq_ignore_ascii_case("true")),
        Some(ValueClass::DateTime) => {
            Value::DateTime(servicebus_wire::parse_timestamp(text).ok_or_else(bad)?)
        }
        Some(ValueClass::Duration) => {
            Value::Duration(servicebus_wire::TimeSpan::parse(text).map_err(|_| bad())?)
        }
    })
}

fn bind(parameters: &KeyValues) -> Result<Parameters, FilterError> {
    parameters
        .iter()
        .map(|(k, v)| Ok((k.trim_start_matches('@').to_ascii_lowercase(), typed(v)?)))
        .collect()
}

fn check_property(p: &Property) -> Result<(), FilterError> {
    if p.scope == Scope::System && SystemProperty::from_name(&p.name).is_none() {
        return Err(FilterError::Invalid(format!(
            "'sys.{}' is not a system property",
            p.name
        )));
    }
    Ok(())
}

fn check_settable(p: &Property) -> Result<(), FilterError> {
    check_property(p)?;
    match SystemProperty::from_name(&p.name) {
        Some(s) if p.scope == Scope::System && !s.is_settable() => Err(FilterError::Invalid(
            format!("'sys.{}' cannot be changed by an action", s.name()),
        )),
        _ => Ok(()),
    }
}

fn check_expr(expr: &Expr, params: &Parameters) -> Result<(), FilterError> {
    let check = |e: &Expr| check_expr(e, params);
    match expr {
        Expr::Literal(_) | Expr::NewId => Ok(()),
        Expr::Property(p) | Expr::Exists(p) => check_property(p),
        Expr::Parameter(name) if params.contains_key(&name.to_ascii_lowercase()) => Ok(()),
        Expr::Parameter(name) => Err(FilterError::Invalid(format!(
            "the parameter @{name} has no value in the rule's Parameters"
        ))),
        Expr::Negate(e) | Expr::Not(e) | Expr::PropertyOf(e) => check(e),
        Expr::IsNull { expr, .. } => check(expr),
        Expr::Binary(_, l, r)
        | Expr::Like {
            expr: l,
            pattern: r,
            ..
        } => check(l).and(check(r)),
        Expr::In { expr, list, .. } => list.iter().try_for_each(check).and(check(expr)),
    }
}

impl CompiledRule {
    /// Whether the message matches (only a definite `true` matches).
    ///
    /// # Errors
    ///
    /// [`EvalError`] when the SQL cannot be evaluated for this message.
    pub fn matches<P: Properties + ?Sized>(&self, msg: &P) -> Result<bool, EvalError> {
        Ok(match &self.filter {
            CompiledFilter::True => true,
            CompiledFilter::False => false,
            CompiledFilter::Sql(expr, params, patterns) => {
                evaluate(expr, msg, params, patterns)?.truth() == Some(true)
            }
            CompiledFilter::Correlation(c, properties) => correlation_matches(c, properties, msg),
        })
    }

    /// Whether its filter is a correlation filter (which counts against its own quota; SQL,
    /// true and false filters count as SQL filters).
    pub fn is_correlation(&self) -> bool {
        matches!(self.filter, CompiledFilter::Correlation(..))
    }

    /// Whether evaluating it reads SQL (which can cost in proportion to the message's
    /// properties); true, false and correlation filters without action are cheap.
    pub fn is_sql(&self) -> bool {
        matches!(self.filter, CompiledFilter::Sql(..)) || self.action.is_some()
    }

    /// Whether the rule has an action (each matching rule with an action makes its own copy).
    pub fn has_action(&self) -> bool {
        self.action.is_some()
    }

    /// Applies the action's statements in order to a copy of the message.
    ///
    /// # Errors
    ///
    /// [`EvalError`] when a statement's expression cannot be evaluated.
    pub fn apply<P: PropertiesMut + ?Sized>(&self, msg: &mut P) -> Result<(), EvalError> {
        let Some((statements, params, patterns)) = &self.action else {
            return Ok(());
        };
        for statement in statements {
            match statement {
                Statement::Set(p, e) => {
                    let value = evaluate(e, msg, params, patterns)?;
                    set(msg, p, value);
                }
                Statement::Remove(p) => set(msg, p, Value::Null),
            }
        }
        Ok(())
    }
}

fn set<P: PropertiesMut + ?Sized>(msg: &mut P, p: &Property, value: Value) {
    match (p.scope, SystemProperty::from_name(&p.name)) {
        (Scope::System, Some(sys)) => {
            let text = match value {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            msg.set_system(sys, text);
        }
        _ if value == Value::Null => msg.remove_user(&p.name),
        _ => msg.set_user(&p.name, value),
    }
}

fn correlation_matches<P: Properties + ?Sized>(
    c: &CorrelationFilter,
    properties: &[(String, Value)],
    msg: &P,
) -> bool {
    let fields = [
        (&c.correlation_id, SystemProperty::CorrelationId),
        (&c.message_id, SystemProperty::MessageId),
        (&c.to, SystemProperty::To),
        (&c.reply_to, SystemProperty::ReplyTo),
        (&c.label, SystemProperty::Label),
        (&c.session_id, SystemProperty::SessionId),
        (&c.reply_to_session_id, SystemProperty::ReplyToSessionId),
        (&c.content_type, SystemProperty::ContentType),
    ];
    fields.iter().all(|(want, sys)| match want {
        None => true,
        Some(want) => msg.system(*sys) == Some(Value::String(want.clone())),
    }) && properties.iter().all(|(name, want)| match msg.user(name) {
        Some(have) => compare(ast::BinaryOp::Equal, &have, want) == Value::Bool(true),
        None => false,
    })
}
