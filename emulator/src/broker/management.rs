//! Entity and rule management: create, update, get, delete, list.

use servicebus_wire::description::{ParsedDescription, RuntimeInfo};
use servicebus_wire::names::{self, NameKind};
use servicebus_wire::{CountDetails, EntityKind, RuleDescription};

use super::{Broker, Error, Result};
use crate::filter;
use crate::model::Address;
use crate::model::{EntityRecord, RuleRecord};
use crate::store::{Key, Write};

/// Name of the rule every new subscription gets unless told otherwise.
pub const DEFAULT_RULE_NAME: &str = "$Default";

/// Whether a `PUT` created or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new entity (201).
    Created,
    /// An existing entity was replaced (200).
    Updated,
}

impl PutOutcome {
    /// `Updated` for a `PUT` with `If-Match`, else `Created`.
    pub fn from_update(update: bool) -> Self {
        if update {
            PutOutcome::Updated
        } else {
            PutOutcome::Created
        }
    }
}

/// An entity with its runtime facts, ready to be described.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityView {
    /// What is stored.
    pub record: EntityRecord,
    /// Counts and timestamps.
    pub runtime: RuntimeInfo,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many exist in all.
    pub total: usize,
}

/// Refuses one more of something `count` of which exist when `limit` is its quota.
fn within_quota(
    count: usize,
    limit: usize,
    sub_code: u32,
    what: impl FnOnce() -> String,
) -> Result<()> {
    if count >= limit {
        return Err(Error::QuotaExceeded {
            what: what(),
            limit,
            sub_code,
        });
    }
    Ok(())
}

fn page<T>(all: Vec<T>, skip: usize, top: usize) -> Page<T> {
    let total = all.len();
    Page {
        items: all.into_iter().skip(skip).take(top).collect(),
        total,
    }
}

impl Broker {
    fn view(&self, record: EntityRecord, topic_path: Option<&str>) -> Result<EntityView> {
        let subscription_count = match (record.description.kind, topic_path) {
            (EntityKind::Topic, Some(path)) => self
                .store
                .count(Address::Subscription(path.to_string(), String::new()))?,
            _ => 0,
        };
        let key = match (record.description.kind, topic_path) {
            (EntityKind::Queue, Some(p)) => Some(Address::Queue(p.to_string())),
            (EntityKind::Topic, Some(p)) => Some(Address::Topic(p.to_string())),
            (EntityKind::Subscription, Some(p)) => {
                Some(Address::Subscription(p.to_string(), record.name.clone()))
            }
            _ => None,
        };
        let entity = key.and_then(|k| self.entity(&k));
        let counts = entity
            .as_ref()
            .and_then(|e| e.queue.as_ref())
            .map(|q| q.counts())
            .unwrap_or_default();
        let size_in_bytes = match (&entity, record.description.kind) {
            (Some(e), EntityKind::Topic) => e.stored_bytes(),
            _ => counts.bytes,
        };
        let runtime = RuntimeInfo {
            created_at: record.created_at,
            updated_at: record.updated_at,
            accessed_at: record.accessed_at,
            size_in_bytes,
            message_count: counts.active + counts.dead_letter + counts.scheduled,
            counts: CountDetails {
                active: counts.active,
                dead_letter: counts.dead_letter,
                scheduled: counts.scheduled,
                ..CountDetails::default()
            },
            subscription_count,
            detailed: true,
        };
        Ok(EntityView { record, runtime })
    }

    fn queue_or_topic(&self, path: &str) -> Result<Option<EntityRecord>> {
        if let Some(q) = self.store.get(Address::Queue(path.to_string()))? {
            return Ok(Some(q));
        }
        Ok(self.store.get(Address::Topic(path.to_string()))?)
    }

    /// Creates (`update == false`) or replaces (`update == true`) a queue or topic.
    ///
    /// # Errors
    ///
    /// [`Error::Name`] for a bad name, [`Error::WrongKind`] for a description of the wrong
    /// kind, [`Error::CreationOnly`] for a change to
    /// a creation-only setting; [`Error::Conflict`] when creating an existing name (in any
    /// case, queue or topic); [`Error::NotFound`] when updating a missing one.
    pub async fn put_entity(
        &self,
        path: &str,
        parsed: ParsedDescription,
        update: bool,
    ) -> Result<(PutOutcome, EntityView)> {
        let kind = parsed.description.kind;
        if kind == EntityKind::Subscription {
            return Err(Error::WrongKind {
                path: path.to_string(),
                expected: "queue or topic",
                found: "SubscriptionDescription",
            });
        }
        names::validate(NameKind::Entity, path).map_err(Error::Name)?;
        let key = match kind {
            EntityKind::Queue => Address::Queue(path.to_string()),
            _ => Address::Topic(path.to_string()),
        };
        let _guard = self.management.lock().await;
        let now = self.clock.now();
        let existing = self.queue_or_topic(path)?;
        let record = match (existing, update) {
            (Some(e), false) => {
                return Err(Error::Conflict {
                    kind: e.description.kind.noun(),
                    path: e.name,
                });
            }
            (None, true) => {
                return Err(Error::NotFound {
                    kind: kind.noun(),
                    path: path.to_string(),
                });
            }
            (None, false) => {
                self.check_entity_quota()?;
                EntityRecord {
                    id: self.runtime.allocate_id(),
                    name: path.to_string(),
                    description: parsed.description,
                    created_at: now,
                    updated_at: now,
                    accessed_at: None,
                }
            }
            (Some(e), true) => {
                if e.description.kind != kind {
                    return Err(Error::WrongKind {
                        path: e.name,
                        expected: e.description.kind.noun(),
                        found: kind.noun(),
                    });
                }
                updated(e, parsed, now)?
            }
        };
        self.store
            .apply(vec![Write::put(key.clone(), &record)])
            .await?;
        self.register(&key, &record);
        let outcome = PutOutcome::from_update(update);
        Ok((outcome, self.view(record, Some(path))?))
    }

    /// Creates or replaces a subscription; a new one gets its default rule (`$Default`
    /// TrueFilter, or the `DefaultRuleDescription` sent with it).
    ///
    /// # Errors
    ///
    /// As [`Broker::put_entity`]; [`Error::NotFound`] also when the topic is missing.
    pub async fn put_subscription(
        &self,
        topic: &str,
        name: &str,
        parsed: ParsedDescription,
        update: bool,
    ) -> Result<(PutOutcome, EntityView)> {
        let key = Address::Subscription(topic.to_string(), name.to_string());
        if parsed.description.kind != EntityKind::Subscription {
            return Err(Error::WrongKind {
                path: key.display_path(),
                expected: "subscription",
                found: parsed.description.kind.element_name(),
            });
        }
        names::validate(NameKind::Subscription, name).map_err(Error::Name)?;
        let _guard = self.management.lock().await;
        self.require_topic(topic)?;
        let now = self.clock.now();
        let existing: Option<EntityRecord> = self.store.get(key.clone())?;
        let mut writes = Vec::new();
        let record = match (existing, update) {
            (Some(e), false) => {
                return Err(Error::Conflict {
                    kind: "subscription",
                    path: Address::Subscription(topic.to_string(), e.name).display_path(),
                });
            }
            (None, true) => {
                return Err(Error::NotFound {
                    kind: "subscription",
                    path: key.display_path(),
                });
            }
            (Some(e), true) => updated(e, parsed, now)?,
            (None, false) => {
                self.check_subscription_quota(topic)?;
                let rule = parsed.default_rule.clone().unwrap_or_default();
                let compiled = filter::compile(&rule)?;
                self.check_filter_quota(topic, &compiled)?;
                let rule_name = rule
                    .name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_RULE_NAME.to_string());
                names::validate(NameKind::Rule, &rule_name).map_err(Error::Name)?;
                let rule_record = RuleRecord {
                    name: rule_name.clone(),
                    rule,
                    created_at: now,
                };
                writes.push(Write::put(
                    Address::Rule(topic.to_string(), name.to_string(), rule_name),
                    &rule_record,
                ));
                EntityRecord {
                    id: self.runtime.allocate_id(),
                    name: name.to_string(),
                    description: parsed.description,
                    created_at: now,
                    updated_at: now,
                    accessed_at: None,
                }
            }
        };
        writes.push(Write::put(key.clone(), &record));
        self.store.apply(writes).await?;
        self.register(&key, &record);
        self.refresh_rules(topic, name)?;
        let outcome = PutOutcome::from_update(update);
        Ok((outcome, self.view(record, Some(topic))?))
    }

    /// Creates or replaces a rule of a subscription.
    ///
    /// # Errors
    ///
    /// [`Error::Name`] for a bad name, [`Error::Rule`] for SQL that does not compile;
    /// [`Error::NotFound`] for a missing topic,
    /// subscription or (on update) rule; [`Error::Conflict`] when creating an existing one.
    pub async fn put_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
        rule: RuleDescription,
        update: bool,
    ) -> Result<(PutOutcome, RuleRecord)> {
        names::validate(NameKind::Rule, name).map_err(Error::Name)?;
        let compiled = filter::compile(&rule)?;
        let _guard = self.management.lock().await;
        self.require_subscription(topic, subscription)?;
        let key = Address::Rule(
            topic.to_string(),
            subscription.to_string(),
            name.to_string(),
        );
        let existing: Option<RuleRecord> = self.store.get(key.clone())?;
        let path = key.display_path();
        let record = match (existing, update) {
            (Some(_), false) => return Err(Error::Conflict { kind: "rule", path }),
            (None, true) => return Err(Error::NotFound { kind: "rule", path }),
            (Some(e), true) => RuleRecord {
                name: e.name,
                rule,
                created_at: e.created_at,
            },
            (None, false) => {
                self.check_filter_quota(topic, &compiled)?;
                RuleRecord {
                    name: name.to_string(),
                    rule,
                    created_at: self.clock.now(),
                }
            }
        };
        self.store.apply(vec![Write::put(key, &record)]).await?;
        self.refresh_rules(topic, subscription)?;
        let outcome = PutOutcome::from_update(update);
        Ok((outcome, record))
    }

    /// Refuses a new queue or topic when the namespace holds its quota of them.
    fn check_entity_quota(&self) -> Result<()> {
        let count = self.store.count(Address::Queue(String::new()))?
            + self.store.count(Address::Topic(String::new()))?;
        within_quota(
            usize::try_from(count).unwrap_or(usize::MAX),
            self.quotas.entities,
            40300,
            || format!("the namespace has {count} queues and topics"),
        )
    }

    /// Refuses a new subscription when `topic` holds its quota of them.
    fn check_subscription_quota(&self, topic: &str) -> Result<()> {
        let count = self
            .store
            .count(Address::Subscription(topic.to_string(), String::new()))?;
        within_quota(
            usize::try_from(count).unwrap_or(usize::MAX),
            self.quotas.subscriptions_per_topic,
            40503,
            || format!("the topic '{topic}' has {count} subscriptions"),
        )
    }

    /// Refuses one more filter like `rule`'s on `topic` when its subscriptions hold their
    /// quota of that kind (SQL filters, true and false included; correlation filters).
    fn check_filter_quota(&self, topic: &str, rule: &filter::CompiledRule) -> Result<()> {
        let Some(t) = self.entity(&Address::Topic(topic.to_string())) else {
            return Ok(());
        };
        let correlation = rule.is_correlation();
        let count: usize = t
            .subscriptions()
            .iter()
            .map(|(_, rules)| {
                rules
                    .iter()
                    .filter(|(_, r)| r.is_correlation() == correlation)
                    .count()
            })
            .sum();
        let (limit, kind, sub_code) = if correlation {
            (
                self.quotas.correlation_filters_per_topic,
                "correlation",
                40502,
            )
        } else {
            (self.quotas.sql_filters_per_topic, "SQL", 40501)
        };
        within_quota(count, limit, sub_code, || {
            format!("the subscriptions of topic '{topic}' have {count} {kind} filters")
        })
    }

    fn require_topic(&self, topic: &str) -> Result<EntityRecord> {
        self.store
            .get(Address::Topic(topic.to_string()))?
            .ok_or_else(|| Error::NotFound {
                kind: "topic",
                path: topic.to_string(),
            })
    }

    fn require_subscription(&self, topic: &str, subscription: &str) -> Result<EntityRecord> {
        self.require_topic(topic)?;
        let key = Address::Subscription(topic.to_string(), subscription.to_string());
        self.store.get(key.clone())?.ok_or_else(|| Error::NotFound {
            kind: "subscription",
            path: key.display_path(),
        })
    }

    /// A queue or topic by path (case-insensitive).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub fn get_entity(&self, path: &str) -> Result<Option<EntityView>> {
        self.queue_or_topic(path)?
            .map(|r| self.view(r, Some(path)))
            .transpose()
    }

    /// A subscription.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub fn get_subscription(&self, topic: &str, name: &str) -> Result<Option<EntityView>> {
        self.store
            .get::<EntityRecord>(Address::Subscription(topic.to_string(), name.to_string()))?
            .map(|r| self.view(r, Some(topic)))
            .transpose()
    }

    /// A rule.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub fn get_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
    ) -> Result<Option<RuleRecord>> {
        Ok(self.store.get(Address::Rule(
            topic.to_string(),
            subscription.to_string(),
            name.to_string(),
        ))?)
    }

    /// Deletes a queue, or a topic with its subscriptions and their rules.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when neither exists.
    pub async fn delete_entity(&self, path: &str) -> Result<()> {
        let _guard = self.management.lock().await;
        let record = self.queue_or_topic(path)?.ok_or_else(|| Error::NotFound {
            kind: "queue or topic",
            path: path.to_string(),
        })?;
        let (key, mut writes) = match record.description.kind {
            EntityKind::Queue => (Address::Queue(path.to_string()), Vec::new()),
            _ => {
                let mut writes = vec![
                    Write::delete_prefix(Address::Subscription(path.to_string(), String::new())),
                    Write::delete_prefix(Address::Rule(
                        path.to_string(),
                        String::new(),
                        String::new(),
                    )),
                ];
                for sub in self
                    .store
                    .scan::<EntityRecord>(Address::Subscription(path.to_string(), String::new()))?
                {
                    writes.extend(self.forget(&Address::Subscription(path.to_string(), sub.name)));
                }
                (Address::Topic(path.to_string()), writes)
            }
        };
        writes.push(Write::delete(key.clone()));
        writes.extend(self.forget(&key));
        Ok(self.store.apply(writes).await?)
    }

    /// Deletes a subscription and its rules.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the topic or subscription is missing.
    pub async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        let _guard = self.management.lock().await;
        self.require_subscription(topic, name)?;
        let key = Address::Subscription(topic.to_string(), name.to_string());
        let mut writes = vec![
            Write::delete(key.clone()),
            Write::delete_prefix(Address::Rule(
                topic.to_string(),
                name.to_string(),
                String::new(),
            )),
        ];
        writes.extend(self.forget(&key));
        Ok(self.store.apply(writes).await?)
    }

    /// Deletes a rule.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the topic, subscription or rule is missing.
    pub async fn delete_rule(&self, topic: &str, subscription: &str, name: &str) -> Result<()> {
        let _guard = self.management.lock().await;
        self.require_subscription(topic, subscription)?;
        let key = Address::Rule(
            topic.to_string(),
            subscription.to_string(),
            name.to_string(),
        );
        if self.store.get::<RuleRecord>(key.clone())?.is_none() {
            return Err(Error::NotFound {
                kind: "rule",
                path: key.display_path(),
            });
        }
        self.store.apply(vec![Write::delete(key)]).await?;
        self.refresh_rules(topic, subscription)
    }

    /// Takes an entity out of the runtime and returns the writes that delete its messages
    /// (deliveries, overrides, stored messages no one else refers to, sequence counter).
    fn forget(&self, key: &Address) -> Vec<Write> {
        let Some(entity) = self.runtime.unregister(key) else {
            return Vec::new();
        };
        if let Address::Subscription(topic, _) = key
            && let Some(t) = self.entity(&Address::Topic(topic.clone()))
        {
            self.runtime.remove_subscription(&t, entity.id);
        }
        let mut writes = vec![
            Write::delete_prefix(Key::Deliveries(entity.id)),
            Write::delete_prefix(Key::Overrides(entity.id)),
            Write::delete_prefix(Key::Messages(entity.id)),
            Write::delete(Key::NextSequence(entity.id)),
            Write::delete_prefix(Key::SeenOf(entity.id)),
        ];
        if entity.kind == EntityKind::Topic {
            self.runtime.forget_refs(entity.id);
        }
        if let Some(queue) = &entity.queue {
            let (entries, cold) = queue.drain();
            // A subscription's deliveries hold references to its topic's messages; a queue's
            // messages go with the prefix deletes above.
            if let Address::Subscription(topic, _) = key {
                let topic = self.entity(&Address::Topic(topic.clone()));
                let mut release = |seq: u64, size: &dyn Fn(u64) -> u64| {
                    if let Some(topic) = &topic
                        && self.runtime.release_ref(topic.id, seq)
                    {
                        self.runtime
                            .release_message(topic.id, seq, size(topic.id), &mut writes);
                    }
                };
                for entry in entries {
                    release(entry.seq, &|_| entry.delivery.size);
                }
                for seq in cold {
                    // Cold deliveries are read only for the size of a message they release.
                    release(seq, &|topic| {
                        let mut size = 0;
                        let read = self.deliveries(topic, &[entity.id], seq, seq, |_, _, d| {
                            size = d.size;
                            Ok(())
                        });
                        if let Err(e) = read {
                            tracing::warn!(error = %e, seq, "size of a released message unread");
                        }
                        size
                    });
                }
            }
            queue.wake_all();
        }
        writes
    }

    /// Lists queues or topics in name order.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub fn list_entities(
        &self,
        kind: EntityKind,
        skip: usize,
        top: usize,
    ) -> Result<Page<EntityView>> {
        let prefix = match kind {
            EntityKind::Queue => Address::Queue(String::new()),
            _ => Address::Topic(String::new()),
        };
        let records: Vec<EntityRecord> = self.store.scan(prefix)?;
        let page = page(records, skip, top);
        let items = page
            .items
            .into_iter()
            .map(|r| {
                let path = r.name.clone();
                self.view(r, Some(&path))
            })
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            total: page.total,
        })
    }

    /// Lists a topic's subscriptions in name order.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the topic is missing.
    pub fn list_subscriptions(
        &self,
        topic: &str,
        skip: usize,
        top: usize,
    ) -> Result<Page<EntityView>> {
        self.require_topic(topic)?;
        let records: Vec<EntityRecord> = self
            .store
            .scan(Address::Subscription(topic.to_string(), String::new()))?;
        let page = page(records, skip, top);
        let items = page
            .items
            .into_iter()
            .map(|r| self.view(r, Some(topic)))
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            total: page.total,
        })
    }

    /// Lists a subscription's rules in name order.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the topic or subscription is missing.
    pub fn list_rules(
        &self,
        topic: &str,
        subscription: &str,
        skip: usize,
        top: usize,
    ) -> Result<Page<RuleRecord>> {
        self.require_subscription(topic, subscription)?;
        let records = self.store.scan(Address::Rule(
            topic.to_string(),
            subscription.to_string(),
            String::new(),
        ))?;
        Ok(page(records, skip, top))
    }
}

/// Applies an update: the whole description is replaced (omitted settings revert to their
/// defaults, as the service does), but creation-only settings may not change.
fn updated(
    existing: EntityRecord,
    parsed: ParsedDescription,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<EntityRecord> {
    if let Some(name) = existing
        .description
        .immutable_change(&parsed.description, &parsed.present)
    {
        return Err(Error::CreationOnly { setting: name });
    }
    let mut description = parsed.description;
    // Creation-only settings that the update did not name keep their value.
    description.requires_session = existing.description.requires_session;
    description.requires_duplicate_detection = existing.description.requires_duplicate_detection;
    description.enable_partitioning = existing.description.enable_partitioning;
    description.enable_subscription_partitioning =
        existing.description.enable_subscription_partitioning;
    Ok(EntityRecord {
        id: existing.id,
        name: existing.name,
        description,
        created_at: existing.created_at,
        updated_at: now,
        accessed_at: Some(now),
    })
}
