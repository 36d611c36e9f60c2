//! Three-valued evaluation: a missing user property is unknown (`Value::Null`); comparisons
//! and arithmetic with unknown are unknown; `AND` is false if either side is false, `OR`
//! true if either side is true, else unknown if either is; `NOT` unknown is unknown.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::EvalError;
use super::ast::{BinaryOp, Expr, Property, Scope};
use super::like::Patterns;
use super::value::{Properties, SystemProperty, Value};

/// Bound parameters by lower-cased name without `@`.
pub(super) type Parameters = HashMap<String, Value>;

/// The value of `expr` for `msg`. (One arm per expression kind, as the grammar lists
/// them: long, but each arm is the semantics of one construct.)
pub(super) fn evaluate<P: Properties + ?Sized>(
    expr: &Expr,
    msg: &P,
    params: &Parameters,
    patterns: &Patterns,
) -> Result<Value, EvalError> {
    let eval = |e: &Expr| evaluate(e, msg, params, patterns);
    Ok(match expr {
        Expr::Literal(v) => v.clone(),
        Expr::Property(p) => read(p, msg),
        Expr::Parameter(name) => params
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or(Value::Null),
        Expr::Negate(e) => match eval(e)? {
            Value::Int(i) => Value::Int(i.checked_neg().ok_or(EvalError::Overflow)?),
            Value::Double(d) => Value::Double(-d),
            _ => Value::Null,
        },
        Expr::Not(e) => match eval(e)?.truth() {
            Some(b) => Value::Bool(!b),
            None => Value::Null,
        },
        Expr::Binary(BinaryOp::And, l, r) => {
            let left = eval(l)?.truth();
            if left == Some(false) {
                return Ok(Value::Bool(false));
            }
            match (left, eval(r)?.truth()) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        Expr::Binary(BinaryOp::Or, l, r) => {
            let left = eval(l)?.truth();
            if left == Some(true) {
                return Ok(Value::Bool(true));
            }
            match (left, eval(r)?.truth()) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        Expr::Binary(op, l, r) => {
            let (left, right) = (eval(l)?, eval(r)?);
            match op {
                BinaryOp::Add
                | BinaryOp::Subtract
                | BinaryOp::Multiply
                | BinaryOp::Divide
                | BinaryOp::Modulo => arithmetic(*op, &left, &right)?,
                _ => compare(*op, &left, &right),
            }
        }
        Expr::IsNull { expr, negated } => Value::Bool((eval(expr)? == Value::Null) != *negated),
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let left = eval(expr)?;
            if left == Value::Null {
                return Ok(Value::Null);
            }
            let mut unknown = false;
            for item in list {
                match compare(BinaryOp::Equal, &left, &eval(item)?) {
                    Value::Bool(true) => return Ok(Value::Bool(!negated)),
                    Value::Bool(false) => {}
                    _ => unknown = true,
                }
            }
            if unknown {
                Value::Null
            } else {
                Value::Bool(*negated)
            }
        }
        Expr::Like {
            expr,
            pattern,
            escape,
            negated,
        } => match (eval(expr)?, eval(pattern)?) {
            (Value::String(s), Value::String(p)) => {
                Value::Bool(patterns.matches(&s, &p, *escape) != *negated)
            }
            _ => Value::Null,
        },
        Expr::Exists(p) => Value::Bool(match p.scope {
            Scope::User => msg.user(&p.name).is_some(),
            Scope::System => SystemProperty::from_name(&p.name)
                .and_then(|s| msg.system(s))
                .is_some(),
        }),
        Expr::NewId => Value::String(uuid::Uuid::new_v4().to_string()),
        Expr::PropertyOf(e) => match eval(e)? {
            Value::String(name) => match name.split_once('.') {
                Some((scope, rest)) if scope.eq_ignore_ascii_case("sys") => read(
                    &Property {
                        scope: Scope::System,
                        name: rest.into(),
                    },
                    msg,
                ),
                Some((scope, rest)) if scope.eq_ignore_ascii_case("user") => read(
                    &Property {
                        scope: Scope::User,
                        name: rest.into(),
                    },
                    msg,
                ),
                _ => msg.user(&name).unwrap_or(Value::Null),
            },
            _ => Value::Null,
        },
    })
}

fn read<P: Properties + ?Sized>(p: &Property, msg: &P) -> Value {
    match p.scope {
        Scope::User => msg.user(&p.name),
        Scope::System => SystemProperty::from_name(&p.name).and_then(|s| msg.system(s)),
    }
    .unwrap_or(Value::Null)
}

/// Orders two values when they are comparable: numbers with numbers (Int64 promoted to
/// Double), strings ordinally, times with times, spans with spans. Anything else is not.
fn order(left: &Value, right: &Value) -> Option<Ordering> {
    match (left, right) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
        (Value::Double(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::DateTime(a), Value::DateTime(b)) => Some(a.cmp(b)),
        (Value::Duration(a), Value::Duration(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

pub(super) fn compare(op: BinaryOp, left: &Value, right: &Value) -> Value {
    let is_bool = matches!((left, right), (Value::Bool(_), Value::Bool(_)));
    let Some(ordering) = order(left, right) else {
        return Value::Null;
    };
    Value::Bool(match op {
        BinaryOp::Equal => ordering == Ordering::Equal,
        BinaryOp::NotEqual => ordering != Ordering::Equal,
        // Booleans have equality only.
        _ if is_bool => return Value::Null,
        BinaryOp::Greater => ordering == Ordering::Greater,
        BinaryOp::GreaterOrEqual => ordering != Ordering::Less,
        BinaryOp::Less => ordering == Ordering::Less,
        BinaryOp::LessOrEqual => ordering != Ordering::Greater,
        _ => return Value::Null,
    })
}

fn arithmetic(op: BinaryOp, left: &Value, right: &Value) -> Result<Value, EvalError> {
    Ok(match (left, right) {
        (Value::Int(a), Value::Int(b)) => {
            let (a, b) = (*a, *b);
            if matches!(op, BinaryOp::Divide | BinaryOp::Modulo) && b == 0 {
                return Err(EvalError::DivideByZero);
            }
            let result = match op {
                BinaryOp::Add => a.checked_add(b),
                BinaryOp::Subtract => a.checked_sub(b),
                BinaryOp::Multiply => a.checked_mul(b),
                BinaryOp::Divide => a.checked_div(b),
                _ => a.checked_rem(b),
            };
            Value::Int(result.ok_or(EvalError::Overflow)?)
        }
        (Value::Int(_) | Value::Double(_), Value::Int(_) | Value::Double(_)) => {
            let as_f64 = |v: &Value| match v {
                Value::Int(i) => *i as f64,
                Value::Double(d) => *d,
                _ => f64::NAN,
            };
            let (a, b) = (as_f64(left), as_f64(right));
            Value::Double(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Subtract => a - b,
                BinaryOp::Multiply => a * b,
                BinaryOp::Divide => a / b,
                _ => a % b,
            })
        }
        _ => Value::Null,
    })
}

/// SQL `LIKE`: `%` any run, `_` any one character, `escape` makes the next one literal.
#[cfg(test)]
pub(super) fn like(text: &str, pattern: &str, escape: Option<char>) -> bool {
    Patterns::default().matches(text, pattern, escape)
}
