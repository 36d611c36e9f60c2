//! Claims-based security (contract section 2): `put-token` on `$cbs` stores a SAS token on
//! the connection, and a link may attach only to a node a stored token covers, with the
//! right its role needs. Tokens are checked by the same [`Authenticator`] as REST requests.

use fe2o3_amqp_types::messaging::{ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};

use super::convert;
use super::io::Principal;
use crate::auth::{AuthError, Authenticator, Need, Right};

/// Most tokens one connection keeps; a client puts one per node it uses, and a later token
/// for the same audience replaces the earlier one.
const MAX_TOKENS: usize = 256;

/// The tokens a connection has put, by audience path.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    by_audience: Vec<(String, String)>,
}

/// The path of an audience or node address: scheme and authority dropped, no leading or
/// trailing `/`, percent-decoded (contract 2.4 and 3.1).
pub(crate) fn node_path(address: &str) -> String {
    let rest = match address.find("://") {
        Some(i) => {
            let after = &address[i + 3..];
            after.find('/').map_or("", |j| &after[j..])
        }
        None => address,
    };
    let decoded = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
    decoded.trim_matches('/').to_string()
}

impl Tokens {
    /// Checks a `put-token` request and, when the token is good, keeps it: the status code
    /// and description of the answer (202, or 401 with why).
    fn put(&mut self, auth: &Authenticator, audience: &str, token: &str) -> (i32, String) {
        let path = node_path(audience);
        match auth.authorize(Some(token), &format!("/{path}"), Need::AnyValidToken) {
            Ok(()) => {
                self.by_audience
                    .retain(|(a, _)| !a.eq_ignore_ascii_case(&path));
                if self.by_audience.len() >= MAX_TOKENS {
                    self.by_audience.remove(0);
                }
                self.by_audience.push((path, token.to_string()));
                (202, "Accepted".into())
            }
            Err(e) => (401, e.to_string()),
        }
    }

    /// Whether the connection may use `node` with `right`: a stored token covers it (checked
    /// again now, so an expired one no longer counts), or SASL PLAIN granted the right.
    ///
    /// # Errors
    ///
    /// The description for `amqp:unauthorized-access`.
    pub(crate) fn authorize(
        &self,
        auth: &Authenticator,
        principal: &Principal,
        node: &str,
        right: Right,
    ) -> Result<(), String> {
        if principal.plain.is_some_and(|r| r.grants(right)) {
            return Ok(());
        }
        let path = format!("/{node}");
        let mut last = None;
        for (_, token) in self.by_audience.iter().rev() {
            match auth.authorize(Some(token), &path, Need::Right(right)) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e @ (AuthError::Unauthenticated(_) | AuthError::Bearer(_))) => {
                format!("Unauthorized access. {e}")
            }
            _ => format!(
                "Unauthorized access. '{right:?}' claim(s) are required to perform this \
                 operation. Resource: '{node}'."
            ),
        })
    }
}

/// A string (or symbol) application property of a request.
pub(crate) fn app_string(m: &Message<Body<Value>>, key: &str) -> Option<String> {
    match m.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// Answers one request on `$cbs`: the response message (contract 2.3), with the request's
/// message id as its correlation id, type kept.
pub(crate) fn answer(
    tokens: &mut Tokens,
    auth: &Authenticator,
    request: &Message<Body<Value>>,
) -> Message<Body<Value>> {
    let (code, description) = match (
        app_string(request, "operation").as_deref(),
        app_string(request, "name"),
        &request.body,
    ) {
        (Some("put-token"), Some(audience), Body::Value(v)) => match &v.0 {
            Value::String(token) => tokens.put(auth, &audience, token),
            _ => (400, "the token must be a string".into()),
        },
        (Some("put-token"), _, _) => (400, "put-token needs a name and a token".into()),
        (other, _, _) => (
            400,
            format!(
                "the operation '{}' is not supported on $cbs",
                other.unwrap_or("")
            ),
        ),
    };
    response(request, code, &description, &["status-code", "statusCode"])
}

/// A response to a request message: correlation id = the request's message id, status
/// code and description under each of `code_keys` (and the matching description keys).
pub(crate) fn response(
    request: &Message<Body<Value>>,
    code: i32,
    description: &str,
    code_keys: &[&str],
) -> Message<Body<Value>> {
    let mut props = ApplicationProperties::default();
    for key in code_keys {
        props.0.insert((*key).to_string(), SimpleValue::Int(code));
        let description_key = key
            .replace("code", "description")
            .replace("Code", "Description");
        props.0.insert(
            description_key,
            SimpleValue::String(description.to_string()),
        );
    }
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            correlation_id: request
                .properties
                .as_ref()
                .and_then(|p| p.message_id.clone()),
            ..Properties::default()
        }),
        application_properties: Some(props),
        body: Body::Empty,
        footer: None,
    }
}

/// The encoded response, or nothing when even encoding it fails (then the request simply
/// goes unanswered, and the client times out).
pub(crate) fn encoded(message: &Message<Body<Value>>) -> Option<Vec<u8>> {
    convert::write(message).ok()
}

#[cfg(test)]
mod tests {
    use super::node_path;

    #[test]
    fn node_paths() {
        assert_eq!(node_path("sb://127.0.0.1:5672/q1"), "q1");
        assert_eq!(
            node_path("amqps://h:1/t/Subscriptions/s"),
            "t/Subscriptions/s"
        );
        assert_eq!(node_path("/q1"), "q1");
        assert_eq!(node_path("q%201/$management"), "q 1/$management");
        assert_eq!(node_path("sb://host"), "");
    }
}
