//! SQL `LIKE`: `%` any run, `_` any one character, the escape character makes the next one
//! literal, matched in time about linear in the text and the pattern.
//!
//! A pattern is cut at its `%`s into segments of fixed length. The first must match at the
//! start of the text (unless the pattern starts with `%`), the last at its end (unless it
//! ends with `%`), and each one between at its leftmost place after the one before: since
//! every segment spans a fixed number of characters, the leftmost choice never rules out a
//! match. A segment without `_` is found with the standard library's two-way substring
//! search (linear); one with `_` with a bit-parallel shift-and scan (text length times
//! segment length / 64). So a long property cannot cost the product of its length and the
//! pattern's, as the backtracking matcher did (1 s per send for 60,000 against 30,000
//! characters), nor fall into that product as a regular-expression engine does once its
//! lazy DFA gives up on a long pattern (measured: 38 s in a debug build for a 15,000-
//! character pattern against 32,000 characters, through the `regex` crate).
//!
//! Patterns a rule spells out (a literal, or a bound parameter) are compiled once, when the
//! rule is; a pattern read from a message is compiled when it is evaluated.

use std::collections::HashMap;

use super::ast::{Expr, Statement};
use super::eval::Parameters;
use super::value::Value;

/// One character of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    Any,
}

/// A run of tokens between two `%`s, with what finding it needs.
#[derive(Debug, Clone)]
struct Segment {
    tokens: Vec<Token>,
    /// The tokens as text, when there is no `_` (found by substring search).
    literal: Option<String>,
}

impl Segment {
    fn new(tokens: Vec<Token>) -> Self {
        let literal = tokens
            .iter()
            .map(|t| match t {
                Token::Char(c) => Some(*c),
                Token::Any => None,
            })
            .collect::<Option<String>>();
        Segment { tokens, literal }
    }

    /// The byte just past a match of the segment starting at byte `at`, if it matches there.
    fn match_at(&self, text: &str, at: usize) -> Option<usize> {
        let mut chars = text.get(at..)?.char_indices();
        let mut end = at;
        for token in &self.tokens {
            let (i, c) = chars.next()?;
            if let Token::Char(want) = token
                && *want != c
            {
                return None;
            }
            end = at + i + c.len_utf8();
        }
        Some(end)
    }

    /// The leftmost match within `text[from..to]`: its start and end bytes.
    fn find(&self, text: &str, from: usize, to: usize) -> Option<(usize, usize)> {
        let window = text.get(from..to)?;
        if let Some(literal) = &self.literal {
            let start = from + window.find(literal.as_str())?;
            return Some((start, start + literal.len()));
        }
        self.shift_and(window).map(|(s, e)| (from + s, from + e))
    }

    /// Shift-and over the characters of `window`: bit `i` of the state is set when the
    /// first `i + 1` tokens match the characters ending here.
    fn shift_and(&self, window: &str) -> Option<(usize, usize)> {
        let len = self.tokens.len();
        let words = len.div_ceil(64);
        let mut any = vec![0u64; words];
        let mut by_char: HashMap<char, Vec<u64>> = HashMap::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let mask = match token {
                Token::Any => &mut any,
                Token::Char(c) => by_char.entry(*c).or_insert_with(|| vec![0u64; words]),
            };
            mask[i / 64] |= 1 << (i % 64);
        }
        let last = (len - 1) / 64;
        let last_bit = 1u64 << ((len - 1) % 64);
        let mut state = vec![0u64; words];
        let mut starts = std::collections::VecDeque::with_capacity(len);
        for (at, c) in window.char_indices() {
            if starts.len() == len {
                starts.pop_front();
            }
            starts.push_back(at);
            let own = by_char.get(&c);
            let mut carry = 1u64;
            for (w, word) in state.iter_mut().enumerate() {
                let next_carry = *word >> 63;
                let mask = any[w] | own.map_or(0, |m| m[w]);
                *word = ((*word << 1) | carry) & mask;
                carry = next_carry;
            }
            if state[last] & last_bit != 0 {
                return Some((starts[0], at + c.len_utf8()));
            }
        }
        None
    }
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub(super) struct LikePattern {
    /// The segments between `%`s (empty ones dropped).
    segments: Vec<Segment>,
    /// Whether the first segment is anchored at the start (no leading `%`).
    anchored_start: bool,
    /// Whether the last segment is anchored at the end (no trailing `%`).
    anchored_end: bool,
    /// Whether the pattern has a `%` at all.
    has_run: bool,
}

impl LikePattern {
    /// Compiles `pattern` with its `ESCAPE` character.
    pub(super) fn compile(pattern: &str, escape: Option<char>) -> Self {
        let mut segments = vec![Vec::new()];
        let mut chars = pattern.chars();
        let (mut leading_run, mut trailing_run) = (false, false);
        let mut first = true;
        while let Some(c) = chars.next() {
            let run = Some(c) != escape && c == '%';
            if first {
                leading_run = run;
                first = false;
            }
            trailing_run = run;
            if run {
                segments.push(Vec::new());
                continue;
            }
            let token = if Some(c) == escape {
                // An escape at the end escapes nothing and stands for itself.
                Token::Char(chars.next().unwrap_or(c))
            } else if c == '_' {
                Token::Any
            } else {
                Token::Char(c)
            };
            if let Some(segment) = segments.last_mut() {
                segment.push(token);
            }
        }
        let has_run = segments.len() > 1;
        LikePattern {
            segments: segments
                .into_iter()
                .filter(|s| !s.is_empty())
                .map(Segment::new)
                .collect(),
            anchored_start: !leading_run,
            anchored_end: !trailing_run,
            has_run,
        }
    }

    /// Whether the whole of `text` matches.
    pub(super) fn matches(&self, text: &str) -> bool {
        let mut segments = self.segments.as_slice();
        if !self.has_run {
            // No `%`: the one segment (if any) is the whole text.
            return match segments.first() {
                Some(s) => s.match_at(text, 0) == Some(text.len()),
                None => text.is_empty(),
            };
        }
        let (mut from, mut to) = (0, text.len());
        if self.anchored_start
            && let Some((first, rest)) = segments.split_first()
        {
            let Some(end) = first.match_at(text, 0) else {
                return false;
            };
            from = end;
            segments = rest;
        }
        if self.anchored_end
            && let Some((last, rest)) = segments.split_last()
        {
            let chars = last.tokens.len();
            let Some((start, _)) = text.char_indices().rev().nth(chars.saturating_sub(1)) else {
                return false;
            };
            if start < from || last.match_at(text, start) != Some(text.len()) {
                return false;
            }
            to = start;
            segments = rest;
        }
        for segment in segments {
            match segment.find(text, from, to) {
                Some((_, end)) => from = end,
                None => return false,
            }
        }
        true
    }
}

/// The patterns a rule spells out, compiled when the rule is, by text and escape.
#[derive(Debug, Clone, Default)]
pub(super) struct Patterns(HashMap<(String, Option<char>), LikePattern>);

impl PartialEq for Patterns {
    /// Compiled patterns follow from the rule's syntax tree, which is compared instead.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Patterns {
    /// Compiles every `LIKE` pattern of `exprs` whose text is known before any message: a
    /// literal, or a bound parameter.
    pub(super) fn of<'a>(exprs: impl IntoIterator<Item = &'a Expr>, params: &Parameters) -> Self {
        let mut patterns = Patterns::default();
        for expr in exprs {
            patterns.collect(expr, params);
        }
        patterns
    }

    /// As [`Patterns::of`], over an action's statements.
    pub(super) fn of_statements(statements: &[Statement], params: &Parameters) -> Self {
        Self::of(
            statements.iter().filter_map(|s| match s {
                Statement::Set(_, e) => Some(e),
                Statement::Remove(_) => None,
            }),
            params,
        )
    }

    fn collect(&mut self, expr: &Expr, params: &Parameters) {
        let mut stack = vec![expr];
        while let Some(e) = stack.pop() {
            match e {
                Expr::Like {
                    expr,
                    pattern,
                    escape,
                    ..
                } => {
                    let known = match pattern.as_ref() {
                        Expr::Literal(Value::String(p)) => Some(p.clone()),
                        Expr::Parameter(name) => match params.get(&name.to_ascii_lowercase()) {
                            Some(Value::String(p)) => Some(p.clone()),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(p) = known {
                        let compiled = LikePattern::compile(&p, *escape);
                        self.0.insert((p, *escape), compiled);
                    }
                    stack.push(expr);
                    stack.push(pattern);
                }
                other => stack.extend(other.children()),
            }
        }
    }

    /// Whether `text` matches `pattern`: with the pattern compiled beforehand when the rule
    /// spelled it out, else compiled now.
    pub(super) fn matches(&self, text: &str, pattern: &str, escape: Option<char>) -> bool {
        match self.0.get(&(pattern.to_string(), escape)) {
            Some(compiled) => compiled.matches(text),
            None => LikePattern::compile(pattern, escape).matches(text),
        }
    }
}
