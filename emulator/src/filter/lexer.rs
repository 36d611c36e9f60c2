//! Tokens of the filter language, each with its 1-based character position.

use super::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// A regular identifier that is not a keyword.
    Ident(String),
    /// A keyword, upper-cased.
    Keyword(&'static str),
    /// `[delimited]` or `"quoted"` identifier, unescaped.
    Delimited(String),
    /// A numeric literal as written.
    Number(String),
    /// `'text'`, unescaped.
    Str(String),
    /// `@name` (without the `@`).
    Param(String),
    /// An operator or punctuation.
    Sym(&'static str),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
}

const SYMBOLS: [&str; 17] = [
    "<>", "!=", ">=", "<=", "=", ">", "<", "+", "-", "*", "/", "%", "(", ")", ",", ".", ";",
];

/// The tokens of `text`, ending with [`Tok::Eof`]. (One loop over the characters with an
/// arm per token kind: long, but read top to bottom as the grammar's lexical rules.)
pub(super) fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let err = |pos: usize, message: String| ParseError {
        position: pos + 1,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match super::ast::KEYWORDS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(&word))
            {
                Some(k) => Tok::Keyword(k),
                None => Tok::Ident(word),
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    return Err(err(i, "an exponent needs digits".into()));
                }
            }
            if i < chars.len() && (chars[i].is_ascii_alphabetic() || chars[i] == '_') {
                return Err(err(i, format!("unexpected '{}' after a number", chars[i])));
            }
            Tok::Number(chars[start..i].iter().collect())
        } else if c == '\'' || c == '[' || c == '"' {
            let close = if c == '[' { ']' } else { c };
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        let what = if c == '\'' {
                            "string"
                        } else {
                            "delimited name"
                        };
                        return Err(err(start, format!("unterminated {what}")));
                    }
                    Some(&d) if d == close => {
                        if chars.get(i + 1) == Some(&close) {
                            text.push(close);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&d) => {
                        text.push(d);
                        i += 1;
                    }
                }
            }
            if c == '\'' {
                Tok::Str(text)
            } else if text.is_empty() {
                return Err(err(start, "a delimited name may not be empty".into()));
            } else {
                Tok::Delimited(text)
            }
        } else if c == '@' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if i == start + 1 {
                return Err(err(
                    start,
                    "'@' must be followed by a parameter name".into(),
                ));
            }
            Tok::Param(chars[start + 1..i].iter().collect())
        } else if let Some(sym) = SYMBOLS.iter().find(|s| {
            let s: Vec<char> = s.chars().collect();
            chars[i..].starts_with(&s)
        }) {
            i += sym.chars().count();
            Tok::Sym(sym)
        } else {
            return Err(err(i, format!("unexpected character '{c}'")));
        };
        tokens.push(Token {
            tok,
            pos: start + 1,
        });
    }
    tokens.push(Token {
        tok: Tok::Eof,
        pos: chars.len() + 1,
    });
    Ok(tokens)
}
