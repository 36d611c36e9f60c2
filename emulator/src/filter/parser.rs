//! Recursive-descent parser. Precedence, lowest first: `OR`, `AND`, `NOT`, comparisons
//! (`= <> != > >= < <=`, `IS [NOT] NULL`, `[NOT] IN`, `[NOT] LIKE`), `+ -`, `* / %`,
//! unary `+ -`.

use super::ParseError;
use super::ast::{BinaryOp, Expr, Property, Scope, Statement};
use super::lexer::{Tok, Token, tokenize};
use super::value::Value;

/// Most statements in one action.
pub const MAX_ACTION_STATEMENTS: usize = 32;
/// Most tokens in one filter or action: twice what the service's 1,024-character limit can
/// hold, so that the canonical printer's form of any accepted text (which adds brackets)
/// parses too. It bounds the tree, hence the depth of every walk over it (evaluation,
/// printing, dropping), whatever the caller checked before.
pub(super) const MAX_TOKENS: usize = 2048;
/// Deepest nesting of parentheses, `NOT`s and signs. The parser recurses through nine
/// functions a parenthesis: 509 of them (1,021 characters) overflowed a runtime thread's
/// 2 MiB stack in a debug build and aborted the emulator; 128 stays far from that.
pub(super) const MAX_NESTING: usize = 128;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Current nesting (see [`MAX_NESTING`]).
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self, ParseError> {
        let tokens = tokenize(text)?;
        // The last token is the end marker.
        if tokens.len() > MAX_TOKENS + 1 {
            return Err(ParseError {
                position: tokens[MAX_TOKENS].pos,
                message: format!("the text has more than {MAX_TOKENS} tokens"),
            });
        }
        Ok(Parser {
            tokens,
            at: 0,
            depth: 0,
        })
    }

    /// Runs `f` one nesting level deeper, refusing past [`MAX_NESTING`].
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(&format!(
                "expressions nest more than {MAX_NESTING} levels deep"
            )));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }
}

/// Parses a filter expression.
pub(super) fn parse_filter(text: &str) -> Result<Expr, ParseError> {
    let mut p = Parser::new(text)?;
    if p.peek() == &Tok::Eof {
        return Err(p.error("the expression is empty"));
    }
    let expr = p.or()?;
    p.expect_end()?;
    Ok(expr)
}

/// Parses an action: `SET` and `REMOVE` statements, each optionally ended by `;`.
pub(super) fn parse_action(text: &str) -> Result<Vec<Statement>, ParseError> {
    let mut p = Parser::new(text)?;
    let mut statements = Vec::new();
    loop {
        while p.eat_sym(";") {}
        if p.peek() == &Tok::Eof {
            break;
        }
        if statements.len() == MAX_ACTION_STATEMENTS {
            return Err(p.error("an action may hold at most 32 statements"));
        }
        if p.eat_keyword("SET") {
            let property = p.property()?;
            if !p.eat_sym("=") {
                return Err(p.error("expected '=' after the property of SET"));
            }
            statements.push(Statement::Set(property, p.or()?));
        } else if p.eat_keyword("REMOVE") {
            statements.push(Statement::Remove(p.property()?));
        } else {
            return Err(p.error("expected SET or REMOVE"));
        }
    }
    if statements.is_empty() {
        return Err(ParseError {
            position: 1,
            message: "the action has no statement".into(),
        });
    }
    Ok(statements)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.at + n).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Tok {
        let t = self.tokens[self.at].tok.clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn error(&self, message: &str) -> ParseError {
        let found = match self.peek() {
            Tok::Eof => "the end".to_string(),
            Tok::Ident(s) | Tok::Number(s) => format!("'{s}'"),
            Tok::Keyword(k) => k.to_string(),
            Tok::Delimited(s) => format!("[{s}]"),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Param(s) => format!("@{s}"),
            Tok::Sym(s) => format!("'{s}'"),
        };
        ParseError {
            position: self.tokens[self.at].pos,
            message: format!("{message}, found {found}"),
        }
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(s) if *s == sym) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Tok::Keyword(k) if *k == kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_end(&self) -> Result<(), ParseError> {
        if self.peek() == &Tok::Eof {
            Ok(())
        } else {
            Err(self.error("expected an operator or the end of the expression"))
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        self.nested(|p| {
            let mut left = p.and()?;
            while p.eat_keyword("OR") {
                let right = p.and()?;
                left = Expr::Binary(BinaryOp::Or, Box::new(left), Box::new(right));
            }
            Ok(left)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            let right = self.not()?;
            left = Expr::Binary(BinaryOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.eat_keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.nested(Self::not)?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = self.additive()?;
        let op = match self.peek() {
            Tok::Sym("=") => Some(BinaryOp::Equal),
            Tok::Sym("<>" | "!=") => Some(BinaryOp::NotEqual),
            Tok::Sym(">") => Some(BinaryOp::Greater),
            Tok::Sym(">=") => Some(BinaryOp::GreaterOrEqual),
            Tok::Sym("<") => Some(BinaryOp::Less),
            Tok::Sym("<=") => Some(BinaryOp::LessOrEqual),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let right = self.additive()?;
            return Ok(Expr::Binary(op, Box::new(left), Box::new(right)));
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            if !self.eat_keyword("NULL") {
                return Err(self.error("expected NULL after IS"));
            }
            return Ok(Expr::IsNull {
                expr: Box::new(left),
                negated,
            });
        }
        let negated = matches!(self.peek(), Tok::Keyword("NOT"))
            && matches!(self.peek_at(1), Tok::Keyword("IN" | "LIKE"));
        if negated {
            self.bump();
        }
        if self.eat_keyword("IN") {
            if !self.eat_sym("(") {
                return Err(self.error("expected '(' after IN"));
            }
            let mut list = vec![self.additive()?];
            while self.eat_sym(",") {
                list.push(self.additive()?);
            }
            if !self.eat_sym(")") {
                return Err(self.error("expected ',' or ')' in the IN list"));
            }
            return Ok(Expr::In {
                expr: Box::new(left),
                list,
                negated,
            });
        }
        if self.eat_keyword("LIKE") {
            let pattern = self.additive()?;
            let escape = if self.eat_keyword("ESCAPE") {
                let Tok::Str(s) = self.peek().clone() else {
                    return Err(self.error("expected a one-character string after ESCAPE"));
                };
                let mut chars = s.chars();
                let (Some(c), None) = (chars.next(), chars.next()) else {
                    return Err(self.error("the ESCAPE string must be exactly one character"));
                };
                self.bump();
                Some(c)
            } else {
                None
            };
            return Ok(Expr::Like {
                expr: Box::new(left),
                pattern: Box::new(pattern),
                escape,
                negated,
            });
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => BinaryOp::Add,
                Tok::Sym("-") => BinaryOp::Subtract,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.multiplicative()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => BinaryOp::Multiply,
                Tok::Sym("/") => BinaryOp::Divide,
                Tok::Sym("%") => BinaryOp::Modulo,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat_sym("+") {
            return self.nested(Self::unary);
        }
        if matches!(self.peek(), Tok::Sym("-")) {
            let pos = self.tokens[self.at].pos;
            self.bump();
            // A minus directly before a number is part of the literal (so i64::MIN parses).
            if let Tok::Number(text) = self.peek().clone() {
                self.bump();
                return number(&format!("-{text}"), pos);
            }
            return Ok(match self.nested(Self::unary)? {
                Expr::Literal(Value::Int(i)) if i != i64::MIN => Expr::Literal(Value::Int(-i)),
                Expr::Literal(Value::Double(d)) => Expr::Literal(Value::Double(-d)),
                e => Expr::Negate(Box::new(e)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let pos = self.tokens[self.at].pos;
        match self.peek().clone() {
            Tok::Number(text) => {
                self.bump();
                number(&text, pos)
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::Literal(Value::String(s)))
            }
            Tok::Param(name) => {
                self.bump();
                Ok(Expr::Parameter(name))
            }
            Tok::Keyword("TRUE") => {
                self.bump();
                Ok(Expr::Literal(Value::Bool(true)))
            }
            Tok::Keyword("FALSE") => {
                self.bump();
                Ok(Expr::Literal(Value::Bool(false)))
            }
            Tok::Keyword("NULL") => {
                self.bump();
                Ok(Expr::Literal(Value::Null))
            }
            Tok::Keyword("EXISTS") => {
                self.bump();
                if !self.eat_sym("(") {
                    return Err(self.error("expected '(' after EXISTS"));
                }
                let p = self.property()?;
                if !self.eat_sym(")") {
                    return Err(self.error("expected ')' after the property of EXISTS"));
                }
                Ok(Expr::Exists(p))
            }
            Tok::Sym("(") => {
                self.bump();
                let e = self.or()?;
                if !self.eat_sym(")") {
                    return Err(self.error("expected ')'"));
                }
                Ok(e)
            }
            Tok::Ident(name) if self.peek_at(1) == &Tok::Sym("(") => {
                self.bump();
                self.bump();
                let e = match name.to_ascii_lowercase().as_str() {
                    "newid" => Expr::NewId,
                    "property" | "p" => Expr::PropertyOf(Box::new(self.or()?)),
                    _ => {
                        return Err(ParseError {
                            position: pos,
                            message: format!(
                                "unknown function '{name}' (expected newid, property or p)"
                            ),
                        });
                    }
                };
                if !self.eat_sym(")") {
                    return Err(self.error("expected ')' to close the function call"));
                }
                Ok(e)
            }
            Tok::Ident(_) | Tok::Delimited(_) => Ok(Expr::Property(self.property()?)),
            _ => Err(self.error("expected an expression")),
        }
    }

    fn property(&mut self) -> Result<Property, ParseError> {
        let scope = match self.peek().clone() {
            Tok::Ident(s) if self.peek_at(1) == &Tok::Sym(".") && s.eq_ignore_ascii_case("sys") => {
                Some(Scope::System)
            }
            Tok::Ident(s)
                if self.peek_at(1) == &Tok::Sym(".") && s.eq_ignore_ascii_case("user") =>
            {
                Some(Scope::User)
            }
            _ => None,
        };
        if scope.is_some() {
            self.bump();
            self.bump();
        }
        match self.peek().clone() {
            Tok::Ident(name) | Tok::Delimited(name) => {
                self.bump();
                Ok(Property {
                    scope: scope.unwrap_or(Scope::User),
                    name,
                })
            }
            _ => Err(self.error("expected a property name")),
        }
    }
}

fn number(text: &str, pos: usize) -> Result<Expr, ParseError> {
    let bad = |what: &str| ParseError {
        position: pos,
        message: format!("the number {text} {what}"),
    };
    if text.contains(['.', 'e', 'E']) {
        let d: f64 = text.parse().map_err(|_| bad("is not valid"))?;
        if !d.is_finite() {
            return Err(bad("is out of range"));
        }
        Ok(Expr::Literal(Value::Double(d)))
    } else {
        text.parse::<i64>()
            .map(|i| Expr::Literal(Value::Int(i)))
            .map_err(|_| bad("is out of the Int64 range"))
    }
}
