//! The syntax tree of filters and actions, and its canonical printer.
//!
//! Printing is fully parenthesised so that printing and re-parsing give the same tree.

use std::fmt;

use super::value::Value;

/// Where a property name is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `sys.`: the broker properties.
    System,
    /// `user.` (the default): the custom properties.
    User,
}

/// A property reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Its scope.
    pub scope: Scope,
    /// Its name as written (lookups are case-insensitive).
    pub name: String,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the operator of the same name
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Modulo,
    Equal,
    NotEqual,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    And,
    Or,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Subtract => "-",
            BinaryOp::Multiply => "*",
            BinaryOp::Divide => "/",
            BinaryOp::Modulo => "%",
            BinaryOp::Equal => "=",
            BinaryOp::NotEqual => "<>",
            BinaryOp::Greater => ">",
            BinaryOp::GreaterOrEqual => ">=",
            BinaryOp::Less => "<",
            BinaryOp::LessOrEqual => "<=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        }
    }
}

/// An expression or predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Value),
    /// `[sys.|user.]name`.
    Property(Property),
    /// `@name`, bound from the rule's parameters.
    Parameter(String),
    /// `-x` (unary plus is dropped when parsing).
    Negate(Box<Expr>),
    /// `NOT x`.
    Not(Box<Expr>),
    /// `l op r`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `x IS [NOT] NULL`.
    IsNull {
        /// The operand.
        expr: Box<Expr>,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `x [NOT] IN (a, b, ...)`.
    In {
        /// The operand.
        expr: Box<Expr>,
        /// The candidates.
        list: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `x [NOT] LIKE pattern [ESCAPE 'c']`.
    Like {
        /// The operand.
        expr: Box<Expr>,
        /// The pattern.
        pattern: Box<Expr>,
        /// The escape character.
        escape: Option<char>,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `EXISTS(property)`.
    Exists(Property),
    /// `newid()`.
    NewId,
    /// `property(expr)` / `p(expr)`: the user property named by a string.
    PropertyOf(Box<Expr>),
}

impl Expr {
    /// The expressions directly inside this one.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Literal(_)
            | Expr::Property(_)
            | Expr::Parameter(_)
            | Expr::Exists(_)
            | Expr::NewId => Vec::new(),
            Expr::Negate(e) | Expr::Not(e) | Expr::PropertyOf(e) => vec![e],
            Expr::IsNull { expr, .. } => vec![expr],
            Expr::Binary(_, l, r) => vec![l, r],
            Expr::In { expr, list, .. } => std::iter::once(expr.as_ref()).chain(list).collect(),
            Expr::Like { expr, pattern, .. } => vec![expr, pattern],
        }
    }
}

/// One statement of a rule action.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `SET property = expr`.
    Set(Property, Expr),
    /// `REMOVE property`.
    Remove(Property),
}

pub(super) const KEYWORDS: [&str; 13] = [
    "AND", "OR", "NOT", "IS", "NULL", "IN", "LIKE", "ESCAPE", "EXISTS", "TRUE", "FALSE", "SET",
    "REMOVE",
];

fn is_regular_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(name))
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scope {
            Scope::System => "sys.",
            Scope::User => "user.",
        })?;
        if is_regular_identifier(&self.name) {
            f.write_str(&self.name)
        } else {
            write!(f, "[{}]", self.name.replace(']', "]]"))
        }
    }
}

impl BinaryOp {
    /// The precedence level of the operators the parser chains left to right (`OR`, `AND`,
    /// `+ -`, `* / %`); comparisons are not chained.
    fn chain_level(self) -> Option<u8> {
        match self {
            BinaryOp::Or => Some(1),
            BinaryOp::And => Some(2),
            BinaryOp::Add | BinaryOp::Subtract => Some(3),
            BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Modulo => Some(4),
            _ => None,
        }
    }
}

/// Writes a binary expression with a left operand of the same chained level unbracketed
/// (`(a + b - c)`, not `((a + b) - c)`), which parses back the same; walking the left
/// spine in a loop keeps long chains from nesting deeply when printed and re-parsed.
fn write_chain(f: &mut fmt::Formatter<'_>, expr: &Expr) -> fmt::Result {
    let mut rights = Vec::new();
    let mut at = expr;
    while let Expr::Binary(op, l, r) = at {
        let continues = matches!(l.as_ref(), Expr::Binary(lop, ..)
            if lop.chain_level().is_some() && lop.chain_level() == op.chain_level());
        rights.push((*op, r));
        at = l;
        if !continues {
            break;
        }
    }
    write!(f, "({at}")?;
    for (op, r) in rights.iter().rev() {
        write!(f, " {} {r}", op.symbol())?;
    }
    f.write_str(")")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Property(p) => write!(f, "{p}"),
            Expr::Parameter(name) => write!(f, "@{name}"),
            Expr::Negate(e) => write!(f, "(-{e})"),
            Expr::Not(e) => write!(f, "(NOT {e})"),
            Expr::Binary(..) => write_chain(f, self),
            Expr::IsNull { expr, negated } => {
                write!(f, "({expr} IS {}NULL)", if *negated { "NOT " } else { "" })
            }
            Expr::In {
                expr,
                list,
                negated,
            } => {
                write!(f, "({expr} {}IN (", if *negated { "NOT " } else { "" })?;
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("))")
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                write!(
                    f,
                    "({expr} {}LIKE {pattern}",
                    if *negated { "NOT " } else { "" }
                )?;
                if let Some(c) = escape {
                    write!(
                        f,
                        " ESCAPE '{}'",
                        if *c == '\'' {
                            "''".to_string()
                        } else {
                            c.to_string()
                        }
                    )?;
                }
                f.write_str(")")
            }
            Expr::Exists(p) => write!(f, "EXISTS({p})"),
            Expr::NewId => f.write_str("newid()"),
            Expr::PropertyOf(e) => write!(f, "property({e})"),
        }
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Set(p, e) => write!(f, "SET {p} = {e}"),
            Statement::Remove(p) => write!(f, "REMOVE {p}"),
        }
    }
}
