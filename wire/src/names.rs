//! Entity name rules (contract section 1.4).

use crate::error::WireError;

/// Longest queue or topic path.
pub const MAX_ENTITY_PATH_LEN: usize = 260;
/// Longest subscription or rule name.
pub const MAX_SUBSCRIPTION_OR_RULE_LEN: usize = 50;

/// Which kind of name is being checked (the rules and the error text differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A queue or topic path: segments separated by `/`.
    Entity,
    /// A subscription name: one segment.
    Subscription,
    /// A rule name: one segment (`$Default` allowed).
    Rule,
}

impl NameKind {
    fn noun(self) -> &'static str {
        match self {
            NameKind::Entity => "entity path",
            NameKind::Subscription => "subscription name",
            NameKind::Rule => "rule name",
        }
    }
}

/// A name as it compares: names are case-insensitive in ASCII only, so `Orders` and
/// `orders` are one entity while `\u{c9}q` and `\u{e9}q` are two, and the Kelvin sign is not
/// `k`. Entity keys and SAS scopes both fold with this, so a token covers exactly the
/// entities its audience names.
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Checks a name against the service's rules.
///
/// Queue and topic paths: 1 to 260 characters, `/`-separated segments of letters, digits,
/// `.`, `-`, `_` (no `/` first or last, no empty segment). Subscriptions and rules: 1 to 50
/// characters of letters, digits, `.`, `-`, `_`, and `$` for rules (`$Default`). No segment
/// starts or ends with `.`, so `.`, `..` and `x/../y` are refused: no name reads as a
/// relative path. (Azure Resource Manager also wants letters or digits at both ends; the
/// data plane's rule is not documented, and socketioxide server ids, which the backplane
/// uses as subscription names, start or end with `-` or `_` one time in sixteen, so those
/// stay allowed.)
///
/// # Errors
///
/// [`WireError::InvalidName`] saying which rule the name breaks.
pub fn validate(kind: NameKind, name: &str) -> Result<(), WireError> {
    let bad = |reason: String| WireError::InvalidName {
        kind: kind.noun(),
        name: name.to_string(),
        reason,
    };
    let max = match kind {
        NameKind::Entity => MAX_ENTITY_PATH_LEN,
        NameKind::Subscription | NameKind::Rule => MAX_SUBSCRIPTION_OR_RULE_LEN,
    };
    if name.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if name.chars().count() > max {
        return Err(bad(format!("it is longer than {max} characters")));
    }
    let segments: Vec<&str> = if kind == NameKind::Entity {
        name.split('/').collect()
    } else {
        vec![name]
    };
    for segment in segments {
        if segment.is_empty() {
            return Err(bad(
                "it has an empty segment (a '/' first, last or doubled)".into(),
            ));
        }
        if let Some(c) = segment.chars().find(|c| {
            !(c.is_alphanumeric()
                || matches!(c, '.' | '-' | '_')
                || (*c == '$' && kind == NameKind::Rule))
        }) {
            return Err(bad(format!(
                "the character '{c}' is not allowed (use letters, digits, '.', '-' and '_')"
            )));
        }
        if kind == NameKind::Entity && segment.starts_with('$') {
            return Err(bad("a segment may not start with '$'".into()));
        }
        if segment.starts_with('.') || segment.ends_with('.') {
            return Err(bad(format!(
                "'{segment}' may not start or end with '.' (no name reads as a relative path)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_service_names() {
        validate(NameKind::Entity, "orders").unwrap();
        validate(NameKind::Entity, "a/b.c-d_e").unwrap();
        validate(NameKind::Entity, &"x".repeat(260)).unwrap();
        validate(NameKind::Subscription, "node-1").unwrap();
        validate(NameKind::Rule, "$Default").unwrap();
        // socketioxide server ids name the backplane's subscriptions.
        validate(NameKind::Subscription, "-EP8phss4cfxgCZS").unwrap();
        validate(NameKind::Subscription, "abc_").unwrap();
    }

    #[test]
    fn rejects_bad_names() {
        for (kind, name) in [
            (NameKind::Entity, ""),
            (NameKind::Entity, "/a"),
            (NameKind::Entity, "a/"),
            (NameKind::Entity, "a//b"),
            (NameKind::Entity, "a@b"),
            (NameKind::Entity, "a?b"),
            (NameKind::Entity, "a#b"),
            (NameKind::Entity, "a*b"),
            (NameKind::Entity, "a b"),
            (NameKind::Entity, "$x"),
            (NameKind::Subscription, "a/b"),
            (NameKind::Subscription, "a\\b"),
            (NameKind::Subscription, "$x"),
            (NameKind::Rule, "r*"),
            (NameKind::Entity, "."),
            (NameKind::Entity, ".."),
            (NameKind::Entity, "..."),
            (NameKind::Entity, "x/../y"),
            (NameKind::Entity, "../z"),
            (NameKind::Entity, "a."),
            (NameKind::Entity, ".a"),
            (NameKind::Subscription, ".."),
            (NameKind::Subscription, "s."),
        ] {
            assert!(validate(kind, name).is_err(), "{kind:?} {name:?}");
        }
        assert!(validate(NameKind::Entity, &"x".repeat(261)).is_err());
        assert!(validate(NameKind::Subscription, &"x".repeat(51)).is_err());
    }
}
