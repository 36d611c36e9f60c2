//! What a request path names, decided on the percent-decoded path with case-insensitive
//! keywords (`Subscriptions`, `subscriptions`, `Rules`, `messages`, `$Resources`, ...).

use percent_encoding::percent_decode_str;

/// The resource a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `GET /health`.
    Health,
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
    /// A messaging runtime path (`messages`, `$DeadLetterQueue`).
    Runtime(String),
}

/// Why a path names nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadPath(pub(crate) String);

fn is(segment: &str, keyword: &str) -> bool {
    segment.eq_ignore_ascii_case(keyword)
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
            [n] if is(n, "$namespaceinfo") => return Ok(Target::NamespaceInfo),
            [r, q] if is(r, "$Resources") && is(q, "Queues") => return Ok(Target::ListQueues),
            [r, t] if is(r, "$Resources") && is(t, "Topics") => return Ok(Target::ListTopics),
            [r, ..] if is(r, "$Resources") => {
                return Err(BadPath(format!(
                    "'{path}' is not a known resource collection"
                )));
            }
            _ => {}
        }
        let runtime =
            |s: &&str| is(s, "messages") || is(s, "$DeadLetterQueue") || is(s, "$Transfer");
        if let Some(i) = segments
            .iter()
            .skip(1)
            .position(|s| is(s, "Subscriptions"))
            .map(|i| i + 1)
        {
            let topic = segments[..i].join("/");
            if segments[..i].iter().any(runtime) {
                return Ok(Target::Runtime(path.to_string()));
            }
            return match &segments[i + 1..] {
                [] => Ok(Target::Subscriptions(topic)),
                [sub] => Ok(Target::Subscription(topic, (*sub).to_string())),
                [sub, r] if is(r, "Rules") => Ok(Target::Rules(topic, (*sub).to_string())),
                [sub, r, rule] if is(r, "Rules") => {
                    Ok(Target::Rule(topic, (*sub).to_string(), (*rule).to_string()))
                }
                [_, next, ..] if runtime(next) => Ok(Target::Runtime(path.to_string())),
                _ => Err(BadPath(format!(
                    "'{path}' is not a subscription, rule or message path"
                ))),
            };
        }
        if segments.iter().skip(1).any(runtime) {
            return Ok(Target::Runtime(path.to_string()));
        }
        Ok(Target::Entity(path.to_string()))
    }

    /// The route template, for spans and logs.
    pub(crate) fn template(&self) -> &'static str {
        match self {
            Target::Health => "/health",
            Target::NamespaceInfo => "/$namespaceinfo",
            Target::ListQueues => "/$Resources/Queues",
            Target::ListTopics => "/$Resources/Topics",
            Target::Entity(_) => "/{entity}",
            Target::Subscriptions(_) => "/{topic}/Subscriptions",
            Target::Subscription(..) => "/{topic}/Subscriptions/{subscription}",
            Target::Rules(..) => "/{topic}/Subscriptions/{subscription}/Rules",
            Target::Rule(..) => "/{topic}/Subscriptions/{subscription}/Rules/{rule}",
            Target::Runtime(_) => "/{entity}/messages",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_captured_paths() {
        use Target::*;
        let s = |x: &str| x.to_string();
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
            ("/captopic/Messages", Runtime(s("captopic/Messages"))),
            ("/q/messages/head", Runtime(s("q/messages/head"))),
            (
                "/t/Subscriptions/s/Messages/Head",
                Runtime(s("t/Subscriptions/s/Messages/Head")),
            ),
            (
                "/q/$DeadLetterQueue/messages/head",
                Runtime(s("q/$DeadLetterQueue/messages/head")),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(Target::parse(path), Ok(want), "{path}");
        }
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
        ] {
            assert!(Target::parse(path).is_err(), "{path}");
        }
    }
}
