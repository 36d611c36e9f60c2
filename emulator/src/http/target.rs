//! What a request path names, decided on the percent-decoded path with case-insensitive
//! keywords (`Subscriptions`, `subscriptions`, `Rules`, `messages`, `$Resources`, ...).

use percent_encoding::percent_decode_str;

use crate::model::EntityPath;
use crate::model::path::is_keyword as is;

/// The resource a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `GET /health`.
    Health,
    /// `GET /metrics`: OpenMetrics text.
    Metrics,
    /// `GET /$explorer[/{file}]`: the explorer page.
    Explorer(super::explorer::Asset),
    /// `/$namespaceinfo`.
    NamespaceInfo,
    /// `/$Resources/Queues`.
    ListQueues,
    /// `/$Resources/Topics`.
    ListTopics,
    /// `/{queue or topic}`.
    Entity(String),
    /// `/{topic}/Subscriptions`.
    Subscriptions(String),
    /// `/{topic}/Subscriptions/{sub}`.
    Subscription(String, String),
    /// `/{topic}/Subscriptions/{sub}/Rules`.
    Rules(String, String),
    /// `/{topic}/Subscriptions/{sub}/Rules/{rule}`.
    Rule(String, String, String),
    /// `POST /{queue or topic}/messages`.
    Send(String),
    /// `/{receivable}/messages/head`.
    Head(EntityPath),
    /// `/{receivable}/messages/{sequence number or message id}/{lock token}`.
    Locked(EntityPath, String, String),
    /// `POST /$emulator/clock/advance`: the manual clock's control endpoint.
    ClockAdvance,
    /// The rest of the control API under `/$emulator/`.
    Control(Control),
}

/// A control API resource (`/$emulator/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// `/$emulator/faults`: the fault plan and its counts.
    Faults,
    /// `/$emulator/clock`: broker time.
    Clock,
    /// `/$emulator/peek/{receivable}`.
    Peek(EntityPath),
    /// `/$emulator/purge/{receivable}`.
    Purge(EntityPath),
    /// `/$emulator/reset`, or `/$emulator/reset/{queue or topic}`.
    Reset(Option<String>),
}

/// Why a path names nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadPath(pub(crate) String);

fn position(segments: &[&str], keyword: &str) -> Option<usize> {
    segments
        .iter()
        .skip(1)
        .position(|s| is(s, keyword))
        .map(|i| i + 1)
}

impl Target {
    /// Classifies a raw (still percent-encoded) request path.
    pub(crate) fn parse(raw_path: &str) -> Result<Target, BadPath> {
        let decoded = percent_decode_str(raw_path)
            .decode_utf8()
            .map_err(|_| BadPath("the path is not valid UTF-8 once percent-decoded".into()))?;
        let path = decoded.trim_start_matches('/');
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.is_empty() {
            return Err(BadPath("the path names no entity".into()));
        }
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            [h] if is(h, "health") => return Ok(Target::Health),
            [m] if is(m, "metrics") => return Ok(Target::Metrics),
            [e, rest @ ..] if is(e, "$explorer") && rest.len() <= 1 => {
                let file = rest.first().copied().unwrap_or("");
                return super::explorer::Asset::named(file)
                    .map(Target::Explorer)
                    .ok_or_else(|| BadPath(format!("'{path}' is not a file of the explorer")));
            }
            [n] if is(n, "$namespaceinfo") => return Ok(Target::NamespaceInfo),
            [r, q] if is(r, "$Resources") && is(q, "Queues") => return Ok(Target::ListQueues),
            [r, t] if is(r, "$Resources") && is(t, "Topics") => return Ok(Target::ListTopics),
            [r, ..] if is(r, "$Resources") => {
                return Err(BadPath(format!(
                    "'{path}' is not a known resource collection"
                )));
            }
            [e, c, a] if is(e, "$emulator") && is(c, "clock") && is(a, "advance") => {
                return Ok(Target::ClockAdvance);
            }
            [e, rest @ ..] if is(e, "$emulator") => {
                return control(rest, path).map(Target::Control);
            }
            _ => {}
        }
        if let Some(i) = position(&segments, "messages") {
            return runtime(&segments[..i], &segments[i + 1..], path);
        }
        if segments
            .iter()
            .any(|s| is(s, "$DeadLetterQueue") || is(s, "$Transfer"))
        {
            return Err(BadPath(format!(
                "'{path}' is a subqueue; add /messages/head to receive from it"
            )));
        }
        if let Some(i) = position(&segments, "Subscriptions") {
            let topic = segments[..i].join("/");
            return match &segments[i + 1..] {
                [] => Ok(Target::Subscriptions(topic)),
                [sub] => Ok(Target::Subscription(topic, (*sub).to_string())),
                [sub, r] if is(r, "Rules") => Ok(Target::Rules(topic, (*sub).to_string())),
                [sub, r, rule] if is(r, "Rules") => {
                    Ok(Target::Rule(topic, (*sub).to_string(), (*rule).to_string()))
                }
                _ => Err(BadPath(format!(
                    "'{path}' is not a subscription, rule or message path"
                ))),
            };
        }
        Ok(Target::Entity(path.to_string()))
    }

    /// The route template, for spans and logs.
    pub(crate) fn template(&self) -> &'static str {
        match self {
            Target::Health => "/health",
            Target::Metrics => "/metrics",
            Target::Explorer(_) => "/$explorer",
            Target::NamespaceInfo => "/$namespaceinfo",
            Target::ListQueues => "/$Resources/Queues",
            Target::ListTopics => "/$Resources/Topics",
            Target::Entity(_) => "/{entity}",
            Target::Subscriptions(_) => "/{topic}/Subscriptions",
            Target::Subscription(..) => "/{topic}/Subscriptions/{subscription}",
            Target::Rules(..) => "/{topic}/Subscriptions/{subscription}/Rules",
            Target::Rule(..) => "/{topic}/Subscriptions/{subscription}/Rules/{rule}",
            Target::Send(_) => "/{entity}/messages",
            Target::Head(_) => "/{receivable}/messages/head",
            Target::Locked(..) => "/{receivable}/messages/{id}/{lock}",
            Target::ClockAdvance => "/$emulator/clock/advance",
            Target::Control(Control::Faults) => "/$emulator/faults",
            Target::Control(Control::Clock) => "/$emulator/clock",
            Target::Control(Control::Peek(_)) => "/$emulator/peek/{receivable}",
            Target::Control(Control::Purge(_)) => "/$emulator/purge/{receivable}",
            Target::Control(Control::Reset(_)) => "/$emulator/reset[/{entity}]",
        }
    }
}

/// Classifies the segments after `$emulator`.
fn control(rest: &[&str], path: &str) -> Result<Control, BadPath> {
    let receivable = |segments: &[&str]| {
        EntityPath::from_segments(segments)
            .ok_or_else(|| BadPath(format!("'{path}' names no queue, subscription or subqueue")))
    };
    match rest {
        [f] if is(f, "faults") => Ok(Control::Faults),
        [c] if is(c, "clock") => Ok(Control::Clock),
        [p, entity @ ..] if is(p, "peek") && !entity.is_empty() => {
            receivable(entity).map(Control::Peek)
        }
        [p, entity @ ..] if is(p, "purge") && !entity.is_empty() => {
            receivable(entity).map(Control::Purge)
        }
        [r] if is(r, "reset") => Ok(Control::Reset(None)),
        [r, entity @ ..] if is(r, "reset") => Ok(Control::Reset(Some(entity.join("/")))),
        _ => Err(BadPath(format!(
            "'{path}' is not a control endpoint: faults, clock, clock/advance, \
             peek/{{entity}}, purge/{{entity}}, reset[/{{entity}}]"
        ))),
    }
}

/// Splits a messaging path at its `messages` segment.
fn runtime(before: &[&str], after: &[&str], path: &str) -> Result<Target, BadPath> {
    let bad = || BadPath(format!("'{path}' is not a messaging path"));
    let receivable = EntityPath::from_segments(before).ok_or_else(bad)?;
    match after {
        [] if receivable.is_sendable() => Ok(Target::Send(receivable.entity)),
        [h] if is(h, "head") => Ok(Target::Head(receivable)),
        [id, token] => Ok(Target::Locked(
            receivable,
            (*id).to_string(),
            (*token).to_string(),
        )),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_captured_paths() {
        use Target::*;
        let s = |x: &str| x.to_string();
        let recv = |e: &str, sub: Option<&str>, dead_letter| EntityPath {
            entity: s(e),
            subscription: sub.map(s),
            dead_letter,
        };
        let cases = [
            ("/captopic", Entity(s("captopic"))),
            ("/a/b/c", Entity(s("a/b/c"))),
            ("/$Resources/Topics", ListTopics),
            ("/$Resources/queues", ListQueues),
            ("/%24Resources/Queues", ListQueues),
            ("/$namespaceinfo", NamespaceInfo),
            ("/health", Health),
            ("/captopic/Subscriptions/", Subscriptions(s("captopic"))),
            ("/captopic/subscriptions", Subscriptions(s("captopic"))),
            (
                "/captopic/subscriptions/capsub",
                Subscription(s("captopic"), s("capsub")),
            ),
            (
                "/captopic/Subscriptions/capsql/Rules/",
                Rules(s("captopic"), s("capsql")),
            ),
            (
                "/captopic/subscriptions/capsql/rules/%24Default",
                Rule(s("captopic"), s("capsql"), s("$Default")),
            ),
            ("/a/b/Subscriptions/s", Subscription(s("a/b"), s("s"))),
            ("/captopic/Messages", Send(s("captopic"))),
            ("/a/b/messages", Send(s("a/b"))),
            ("/q/messages/head", Head(recv("q", None, false))),
            (
                "/t/Subscriptions/s/Messages/Head",
                Head(recv("t", Some("s"), false)),
            ),
            (
                "/q/$DeadLetterQueue/messages/head",
                Head(recv("q", None, true)),
            ),
            (
                "/t/subscriptions/s/%24deadletterqueue/messages/head",
                Head(recv("t", Some("s"), true)),
            ),
            (
                "/captopic/subscriptions/capsub/messages/1/5f79c68b",
                Locked(
                    recv("captopic", Some("capsub"), false),
                    s("1"),
                    s("5f79c68b"),
                ),
            ),
            ("/$emulator/clock/advance", ClockAdvance),
        ];
        for (path, want) in cases {
            assert_eq!(Target::parse(path), Ok(want), "{path}");
        }
        assert_eq!(
            recv("t", Some("s"), true).location_path(),
            "t/subscriptions/s/$DeadLetterQueue"
        );
    }

    #[test]
    fn rejects_nonsense() {
        for path in [
            "/",
            "",
            "/$Resources/Nope",
            "/t/Subscriptions/s/Rules/r/extra",
            "/t/Subscriptions/s/whatever",
            "/%FF",
            "/t/Subscriptions/s/messages",
            "/q/$DeadLetterQueue/messages",
            "/q/messages/a/b/c",
            "/q/$DeadLetterQueue",
        ] {
            assert!(Target::parse(path).is_err(), "{path}");
        }
    }
}
