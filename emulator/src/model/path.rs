//! Messaging paths: a queue or a subscription, or its dead-letter subqueue, as a REST path
//! or an AMQP link address names it. Parsed once at the edge, with case-insensitive
//! keywords (`Subscriptions`, `$DeadLetterQueue`).

use super::Address;

/// A queue or topic, or a subscription, or the dead-letter subqueue of either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityPath {
    /// The queue path, or the topic path.
    pub entity: String,
    /// The subscription, for a topic.
    pub subscription: Option<String>,
    /// `$DeadLetterQueue`.
    pub dead_letter: bool,
}

/// Why a path names no queue, topic or subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a queue, topic, subscription or dead-letter path")]
pub struct NotAnEntityPath(pub String);

/// Whether `segment` is `keyword`, ignoring ASCII case.
pub fn is_keyword(segment: &str, keyword: &str) -> bool {
    segment.eq_ignore_ascii_case(keyword)
}

impl EntityPath {
    /// Parses a decoded path such as `q`, `a/b`, `q/$DeadLetterQueue`,
    /// `t/Subscriptions/s` or `t/subscriptions/s/$deadletterqueue` (no leading slash).
    ///
    /// # Errors
    ///
    /// [`NotAnEntityPath`] for an empty path, a misplaced keyword or a `$Transfer` queue.
    pub fn parse(path: &str) -> Result<EntityPath, NotAnEntityPath> {
        let segments: Vec<&str> = path.split('/').collect();
        EntityPath::from_segments(&segments).ok_or_else(|| NotAnEntityPath(path.to_string()))
    }

    /// As [`EntityPath::parse`], on a path already split at `/`; `None` when it names
    /// nothing.
    pub fn from_segments(segments: &[&str]) -> Option<EntityPath> {
        let (before, dead_letter) = match segments.split_last() {
            Some((last, rest)) if is_keyword(last, "$DeadLetterQueue") => (rest, true),
            _ => (segments, false),
        };
        let misplaced = |s: &&str| {
            s.is_empty() || is_keyword(s, "$DeadLetterQueue") || is_keyword(s, "$Transfer")
        };
        if before.is_empty() || before.iter().any(misplaced) {
            return None;
        }
        let at = before
            .iter()
            .skip(1)
            .position(|s| is_keyword(s, "Subscriptions"))
            .map(|i| i + 1);
        Some(match at {
            Some(i) => match &before[i + 1..] {
                [sub] => EntityPath {
                    entity: before[..i].join("/"),
                    subscription: Some((*sub).to_string()),
                    dead_letter,
                },
                _ => return None,
            },
            None => EntityPath {
                entity: before.join("/"),
                subscription: None,
                dead_letter,
            },
        })
    }

    /// Whether messages can be sent to it: a queue or topic, not a subqueue.
    pub fn is_sendable(&self) -> bool {
        self.subscription.is_none() && !self.dead_letter
    }

    /// The queue (or, for a bare path, the queue it would be) or subscription it names.
    pub fn address(&self) -> Address {
        match &self.subscription {
            Some(sub) => Address::Subscription(self.entity.clone(), sub.clone()),
            None => Address::Queue(self.entity.clone()),
        }
    }

    /// The path as `Location` writes it: lower-case `subscriptions`, `$DeadLetterQueue`.
    pub fn location_path(&self) -> String {
        let mut p = self.entity.clone();
        if let Some(s) = &self.subscription {
            p.push_str("/subscriptions/");
            p.push_str(s);
        }
        if self.dead_letter {
            p.push_str("/$DeadLetterQueue");
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_addresses() {
        let p = |e: &str, s: Option<&str>, d| EntityPath {
            entity: e.into(),
            subscription: s.map(Into::into),
            dead_letter: d,
        };
        assert_eq!(EntityPath::parse("q"), Ok(p("q", None, false)));
        assert_eq!(EntityPath::parse("a/b"), Ok(p("a/b", None, false)));
        assert_eq!(
            EntityPath::parse("q/$deadletterqueue"),
            Ok(p("q", None, true))
        );
        assert_eq!(
            EntityPath::parse("t/Subscriptions/s/$DeadLetterQueue"),
            Ok(p("t", Some("s"), true))
        );
        for bad in [
            "",
            "/q",
            "q/",
            "$DeadLetterQueue",
            "t/Subscriptions/s/x",
            "q/$Transfer",
        ] {
            assert!(EntityPath::parse(bad).is_err(), "{bad}");
        }
        assert!(p("q", None, false).is_sendable());
        assert!(!p("t", Some("s"), false).is_sendable());
    }
}
