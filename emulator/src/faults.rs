//! Seeded fault injection: rules that make chosen REST operations on chosen entities fail
//! the way Azure Service Bus can (busy, throttled, gone, slow, a lost acknowledgement, a
//! lost lock, a duplicate delivery), so retry and recovery logic can be tested against the
//! emulator itself. Set with `--faults FILE` or `PUT /$emulator/faults`; plain data and
//! decisions here, the HTTP front-end applies the effects.
//!
//! Determinism: one ChaCha8 stream seeded by the plan's `seed` is drawn from only when a
//! probability rule matches, and `everyNth` counts matching requests; so the same seed and
//! the same sequence of requests give the same faults.

use std::sync::Mutex;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Most rules in one plan.
const MAX_RULES: usize = 100;
/// Longest injected delay.
const MAX_DELAY_MS: u64 = 60_000;

/// A REST operation a rule can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    /// `POST /{entity}/messages` (single or batch).
    Send,
    /// `POST /{receivable}/messages/head`.
    PeekLock,
    /// `DELETE /{receivable}/messages/head`.
    ReceiveAndDelete,
    /// `DELETE /{receivable}/messages/{id}/{lock}`.
    Complete,
    /// `PUT /{receivable}/messages/{id}/{lock}`.
    Abandon,
    /// `POST /{receivable}/messages/{id}/{lock}`.
    RenewLock,
    /// Entity management (ATOM: create, get, update, delete, list).
    Manage,
    /// Any of the above.
    #[serde(rename = "*")]
    Any,
}

/// What a rule does to a request it fires on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Effect {
    /// `503` ServerBusy, nothing applied.
    #[serde(rename_all = "camelCase")]
    ServerBusy {
        /// `Retry-After`: seconds or an HTTP date (default `"1"`).
        retry_after: Option<String>,
    },
    /// Another status, nothing applied: `500`, `429` or `410` (entity gone).
    #[serde(rename_all = "camelCase")]
    Status {
        /// The status.
        status: u16,
        /// `Retry-After`, when given.
        retry_after: Option<String>,
    },
    /// The request is served after this many milliseconds.
    Delay {
        /// Milliseconds, at most 60,000.
        ms: u64,
    },
    /// The operation is applied, then the connection is closed before any answer: the
    /// classic lost acknowledgement.
    DropAfterApply,
    /// A settle finds its lock gone: the message is unlocked (to be delivered again) and the
    /// settle answered `404` lock lost. Only for complete, abandon and renewLock.
    LockLost,
    /// A peek-lock receive is answered, and its lock released at once, so the message is
    /// delivered again (and the first receiver's settle finds the lock lost). Only for
    /// peekLock.
    DuplicateDelivery,
}

/// One rule of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// The operations it selects.
    pub operations: Vec<Operation>,
    /// Entity paths it selects (`*` matches any run of characters, ASCII case ignored):
    /// `orders`, `events/Subscriptions/*`, `*`. Default: every entity.
    #[serde(default = "every_entity")]
    pub entities: Vec<String>,
    /// Fire on this share of matching requests (0 to 1).
    pub probability: Option<f64>,
    /// Fire on every Nth matching request (the Nth, 2Nth, ...).
    pub every_nth: Option<u64>,
    /// Fire at most this many times.
    pub times: Option<u64>,
    /// What firing does.
    pub effect: Effect,
}

fn every_entity() -> Vec<String> {
    vec!["*".to_string()]
}

/// A seed and rules, checked in order: the first that fires decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultPlan {
    /// Seeds the draws of probability rules (default 0).
    #[serde(default)]
    pub seed: u64,
    /// The rules.
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// Parses and checks a plan (JSON).
    ///
    /// # Errors
    ///
    /// What is wrong, naming the rule and field.
    pub fn parse(json: &[u8]) -> Result<FaultPlan, String> {
        let plan: FaultPlan = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        plan.check()?;
        Ok(plan)
    }

    fn check(&self) -> Result<(), String> {
        if self.rules.len() > MAX_RULES {
            return Err(format!("{} rules; at most {MAX_RULES}", self.rules.len()));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.check().map_err(|e| format!("rules[{i}]: {e}"))?;
        }
        Ok(())
    }
}

impl FaultRule {
    fn check(&self) -> Result<(), String> {
        if self.operations.is_empty() {
            return Err("operations is empty; name at least one, or \"*\"".into());
        }
        if self.entities.is_empty() {
            return Err("entities is empty; leave it out to select every entity".into());
        }
        match (self.probability, self.every_nth) {
            (Some(_), Some(_)) => return Err("give probability or everyNth, not both".into()),
            (Some(p), None) if !(0.0..=1.0).contains(&p) => {
                return Err(format!("probability is {p}; it must be between 0 and 1"));
            }
            (None, Some(0)) => return Err("everyNth must be at least 1".into()),
            _ => {}
        }
        let only = |allowed: &[Operation], effect: &str| {
            if self.operations.iter().all(|o| allowed.contains(o)) {
                Ok(())
            } else {
                Err(format!(
                    "effect {effect} applies only to operations {allowed:?}"
                ))
            }
        };
        match &self.effect {
            Effect::ServerBusy { retry_after } => check_retry_after(retry_after.as_deref()),
            Effect::Status {
                status,
                retry_after,
            } => {
                if ![500, 429, 410].contains(status) {
                    return Err(format!(
                        "effect status {status}: use 500, 429 or 410 (serverBusy for 503)"
                    ));
                }
                check_retry_after(retry_after.as_deref())
            }
            Effect::Delay { ms } if *ms > MAX_DELAY_MS => {
                Err(format!("effect delay of {ms} ms; at most {MAX_DELAY_MS}"))
            }
            Effect::Delay { .. } | Effect::DropAfterApply => Ok(()),
            Effect::LockLost => only(
                &[
                    Operation::Complete,
                    Operation::Abandon,
                    Operation::RenewLock,
                ],
                "lockLost",
            ),
            Effect::DuplicateDelivery => only(&[Operation::PeekLock], "duplicateDelivery"),
        }
    }

    fn selects(&self, operation: Operation, entity: &str) -> bool {
        self.operations
            .iter()
            .any(|o| *o == Operation::Any || *o == operation)
            && self.entities.iter().any(|p| glob(p, entity))
    }
}

fn check_retry_after(value: Option<&str>) -> Result<(), String> {
    match value {
        None => Ok(()),
        Some(v) if v.parse::<u64>().is_ok() || httpdate::parse_http_date(v).is_ok() => Ok(()),
        Some(v) => Err(format!(
            "retryAfter '{v}' is neither a number of seconds nor an HTTP date"
        )),
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters; ASCII case is
/// ignored, as in entity names.
fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// How often a rule matched and fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleCount {
    /// Requests the rule selected (whether or not an earlier rule fired first).
    pub matched: u64,
    /// Times it fired.
    pub injected: u64,
}

#[derive(Debug)]
struct Active {
    plan: FaultPlan,
    rng: ChaCha8Rng,
    counts: Vec<RuleCount>,
}

/// The emulator's fault injector: no plan until one is set.
#[derive(Debug, Default)]
pub struct Faults {
    /// Whether a plan is set: without one, requests pass without taking the lock.
    armed: std::sync::atomic::AtomicBool,
    active: Mutex<Option<Active>>,
    /// Faults injected under every plan so far.
    total: std::sync::atomic::AtomicU64,
}

impl Faults {
    /// An injector running `plan`.
    pub fn with(plan: Option<FaultPlan>) -> Faults {
        let faults = Faults::default();
        if let Some(plan) = plan {
            faults.set(plan);
        }
        faults
    }

    /// Runs `plan` from now on, with fresh counters and its seed.
    pub fn set(&self, plan: FaultPlan) {
        let counts = vec![RuleCount::default(); plan.rules.len()];
        let rng = ChaCha8Rng::seed_from_u64(plan.seed);
        *crate::sync::lock(&self.active) = Some(Active { plan, rng, counts });
        self.armed.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Stops injecting.
    pub fn clear(&self) {
        *crate::sync::lock(&self.active) = None;
        self.armed
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The plan and each rule's counts.
    pub fn status(&self) -> Option<(FaultPlan, Vec<RuleCount>)> {
        crate::sync::lock(&self.active)
            .as_ref()
            .map(|a| (a.plan.clone(), a.counts.clone()))
    }

    /// Faults injected since the emulator started.
    pub fn injected(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a plan is set (a cheap check before a request is classified).
    pub fn armed(&self) -> bool {
        self.armed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The effect for one request of `operation` on `entity`, if a rule fires.
    pub fn decide(&self, operation: Operation, entity: &str) -> Option<Effect> {
        if !self.armed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut slot = crate::sync::lock(&self.active);
        let active = slot.as_mut()?;
        let mut fired = None;
        for (rule, count) in active.plan.rules.iter().zip(active.counts.iter_mut()) {
            if !rule.selects(operation, entity) {
                continue;
            }
            count.matched += 1;
            if fired.is_some() || rule.times.is_some_and(|t| count.injected >= t) {
                continue;
            }
            let fires = match (rule.probability, rule.every_nth) {
                (Some(p), _) => active.rng.random::<f64>() < p,
                (None, Some(n)) => count.matched % n == 0,
                (None, None) => true,
            };
            if fires {
                count.injected += 1;
                fired = Some(rule.effect.clone());
            }
        }
        if fired.is_some() {
            self.total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> FaultPlan {
        FaultPlan::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn globs_match_entity_paths() {
        assert!(glob("*", "anything/at/all"));
        assert!(glob("orders", "ORDERS"));
        assert!(!glob("orders", "orders2"));
        assert!(glob(
            "events/Subscriptions/*",
            "events/subscriptions/node-a"
        ));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcd"));
        assert!(glob("*-dlq", "x-dlq"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let text = r#"{"seed": 7, "rules": [{"operations": ["send"], "probability": 0.3,
            "effect": {"type": "serverBusy"}}]}"#;
        let run = || {
            let faults = Faults::with(Some(plan(text)));
            (0..200)
                .map(|_| faults.decide(Operation::Send, "q").is_some())
                .collect::<Vec<_>>()
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        let fired = a.iter().filter(|f| **f).count();
        assert!((30..90).contains(&fired), "{fired} of 200 at 0.3");
        let other = Faults::with(Some(plan(&text.replace("\"seed\": 7", "\"seed\": 8"))));
        let c: Vec<bool> = (0..200)
            .map(|_| other.decide(Operation::Send, "q").is_some())
            .collect();
        assert_ne!(a, c, "another seed, other faults");
    }

    #[test]
    fn every_nth_times_and_order() {
        let faults = Faults::with(Some(plan(
            r#"{"rules": [
                {"operations": ["send"], "entities": ["q*"], "times": 1,
                 "effect": {"type": "serverBusy", "retryAfter": "0"}},
                {"operations": ["send"], "everyNth": 3, "effect": {"type": "status", "status": 500}},
                {"operations": ["*"], "probability": 0, "effect": {"type": "delay", "ms": 5}}
            ]}"#,
        )));
        let got: Vec<Option<Effect>> = (0..6)
            .map(|_| faults.decide(Operation::Send, "q1"))
            .collect();
        let busy = Effect::ServerBusy {
            retry_after: Some("0".into()),
        };
        let error = Effect::Status {
            status: 500,
            retry_after: None,
        };
        assert_eq!(
            got,
            [
                Some(busy),
                None,
                Some(error.clone()),
                None,
                None,
                Some(error)
            ]
        );
        assert_eq!(faults.decide(Operation::Complete, "q1"), None);
        let (_, counts) = faults.status().unwrap();
        assert_eq!(
            counts[0],
            RuleCount {
                matched: 6,
                injected: 1
            }
        );
        assert_eq!(
            counts[1],
            RuleCount {
                matched: 6,
                injected: 2
            }
        );
        assert_eq!(
            counts[2],
            RuleCount {
                matched: 7,
                injected: 0
            }
        );
        assert_eq!(faults.injected(), 3);
        faults.clear();
        assert_eq!(faults.decide(Operation::Send, "q1"), None);
    }

    #[test]
    fn bad_plans_name_the_problem() {
        let bad = |json: &str, says: &str| {
            let e = FaultPlan::parse(json.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{json}: {e}");
        };
        bad("{", "EOF");
        bad(
            r#"{"rules": [{"operations": [], "effect": {"type": "dropAfterApply"}}]}"#,
            "rules[0]: operations is empty",
        );
        bad(
            r#"{"rules": [{"operations": ["send"], "probability": 2, "effect": {"type": "dropAfterApply"}}]}"#,
            "between 0 and 1",
        );
        bad(
            r#"{"rules": [{"operations": ["send"], "probability": 0.5, "everyNth": 2, "effect": {"type": "dropAfterApply"}}]}"#,
            "not both",
        );
        bad(
            r#"{"rules": [{"operations": ["send"], "effect": {"type": "status", "status": 404}}]}"#,
            "500, 429 or 410",
        );
        bad(
            r#"{"rules": [{"operations": ["send"], "effect": {"type": "lockLost"}}]}"#,
            "lockLost applies only",
        );
        bad(
            r#"{"rules": [{"operations": ["complete"], "effect": {"type": "duplicateDelivery"}}]}"#,
            "duplicateDelivery applies only",
        );
        bad(
            r#"{"rules": [{"operations": ["send"], "effect": {"type": "serverBusy", "retryAfter": "soon"}}]}"#,
            "retryAfter 'soon'",
        );
        bad(
            r#"{"rules": [{"operations": ["sned"], "effect": {"type": "dropAfterApply"}}]}"#,
            "unknown variant `sned`",
        );
        bad(
            r#"{"rules": [{"operations": ["send"], "effect": {"type": "explode"}}]}"#,
            "unknown variant `explode`",
        );
        bad(r#"{"rules": [], "extra": 1}"#, "unknown field `extra`");
    }
}
