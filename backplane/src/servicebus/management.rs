//! Typed management: queues, topics, subscriptions and rules over ATOM.

use reqwest::Method;
use servicebus_wire::atom::{EntryContent, parse_entries, request_entry};
use servicebus_wire::{EntityDescription, EntityKind, RuleDescription};

use super::error::{Error, Result, from_status};
use super::{Call, Client, management_path};

impl Client {
    async fn put_description(&self, path: &str, xml: String, update: bool) -> Result<EntryContent> {
        let mut call = Call {
            body: request_entry(&xml).into_bytes(),
            ..Call::default()
        };
        call.headers.push((
            "content-type".into(),
            "application/atom+xml;type=entry;charset=utf-8".into(),
        ));
        if update {
            call.headers.push(("if-match".into(), "*".into()));
        }
        let answer = self.call(Method::PUT, &management_path(path), call).await?;
        let body = String::from_utf8_lossy(&answer.body);
        if !answer.status.is_success() {
            return Err(from_status(answer.status.as_u16(), &body));
        }
        parse_entries(&body)
            .map_err(|e| Error::Protocol(format!("PUT {path}: {e}")))?
            .into_iter()
            .next()
            .map(|e| e.content)
            .ok_or_else(|| Error::Protocol(format!("PUT {path} answered no entry")))
    }

    async fn get_entries(
        &self,
        path_and_query: &str,
    ) -> Result<Vec<servicebus_wire::atom::FeedEntry>> {
        let answer = self
            .call(Method::GET, path_and_query, Call::default())
            .await?;
        let body = String::from_utf8_lossy(&answer.body);
        if answer.status.as_u16() == 404 {
            return Ok(Vec::new());
        }
        if !answer.status.is_success() {
            return Err(from_status(answer.status.as_u16(), &body));
        }
        parse_entries(&body).map_err(|e| Error::Protocol(format!("GET {path_and_query}: {e}")))
    }

    /// Creates a queue, topic or subscription (`path` as the service names it).
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when it exists, [`Error::NotFound`] for a subscription of a
    /// missing topic, others as their status says.
    pub async fn create_entity(
        &self,
        path: &str,
        description: &EntityDescription,
        default_rule: Option<&RuleDescription>,
    ) -> Result<EntityDescription> {
        entity(
            self.put_description(path, description.to_request_xml(default_rule), false)
                .await?,
            path,
        )
    }

    /// Replaces an entity's description (`If-Match: *`).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when it does not exist.
    pub async fn update_entity(
        &self,
        path: &str,
        description: &EntityDescription,
    ) -> Result<EntityDescription> {
        entity(
            self.put_description(path, description.to_request_xml(None), true)
                .await?,
            path,
        )
    }

    /// An entity's description; `None` when it does not exist (the service answers an
    /// empty feed, or `404`).
    ///
    /// # Errors
    ///
    /// As the status says.
    pub async fn get_entity(&self, path: &str) -> Result<Option<EntityDescription>> {
        match self
            .get_entries(&management_path(path))
            .await?
            .into_iter()
            .next()
        {
            None => Ok(None),
            Some(e) => entity(e.content, path).map(Some),
        }
    }

    /// Deletes an entity (a topic with its subscriptions); `false` when it did not exist.
    ///
    /// # Errors
    ///
    /// As the status says.
    pub async fn delete_entity(&self, path: &str) -> Result<bool> {
        let answer = self
            .call(Method::DELETE, &management_path(path), Call::default())
            .await?;
        match answer.status.as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            s => Err(from_status(s, &String::from_utf8_lossy(&answer.body))),
        }
    }

    /// Creates a queue with default settings unless it exists; `true` when created.
    ///
    /// # Errors
    ///
    /// As [`Client::create_entity`], except that "exists" is not an error.
    pub async fn create_queue_if_missing(&self, name: &str) -> Result<bool> {
        self.create_if_missing(name, &EntityDescription::defaults(EntityKind::Queue), None)
            .await
    }

    /// Creates a topic unless it exists; `true` when created.
    ///
    /// # Errors
    ///
    /// As [`Client::create_entity`], except that "exists" is not an error.
    pub async fn create_topic_if_missing(
        &self,
        name: &str,
        description: &EntityDescription,
    ) -> Result<bool> {
        self.create_if_missing(name, description, None).await
    }

    /// Creates a subscription unless it exists; `true` when created. `default_rule`
    /// replaces `$Default` (TrueFilter) on creation.
    ///
    /// # Errors
    ///
    /// As [`Client::create_entity`], except that "exists" is not an error.
    pub async fn create_subscription_if_missing(
        &self,
        topic: &str,
        name: &str,
        description: &EntityDescription,
        default_rule: Option<&RuleDescription>,
    ) -> Result<bool> {
        self.create_if_missing(
            &super::subscription_path(topic, name),
            description,
            default_rule,
        )
        .await
    }

    async fn create_if_missing(
        &self,
        path: &str,
        description: &EntityDescription,
        default_rule: Option<&RuleDescription>,
    ) -> Result<bool> {
        match self.create_entity(path, description, default_rule).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lists queues (`EntityKind::Queue`) or topics, by name, following `$skip`/`$top`.
    ///
    /// # Errors
    ///
    /// As the status says.
    pub async fn list_entities(
        &self,
        kind: EntityKind,
    ) -> Result<Vec<(String, EntityDescription)>> {
        let collection = if kind == EntityKind::Queue {
            "$Resources/Queues"
        } else {
            "$Resources/Topics"
        };
        self.list(collection).await
    }

    /// Lists a topic's subscriptions by name.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the topic is missing (emulator), as the status says.
    pub async fn list_subscriptions(
        &self,
        topic: &str,
    ) -> Result<Vec<(String, EntityDescription)>> {
        self.list(&format!("{topic}/Subscriptions")).await
    }

    async fn list(&self, collection: &str) -> Result<Vec<(String, EntityDescription)>> {
        const PAGE: usize = 100;
        let mut out = Vec::new();
        loop {
            let query = format!(
                "/{collection}?$skip={}&$top={PAGE}&api-version={}",
                out.len(),
                super::API_VERSION
            );
            let answer = self
                .call(Method::GET, &query, super::Call::default())
                .await?;
            let body = String::from_utf8_lossy(&answer.body);
            if !answer.status.is_success() {
                return Err(from_status(answer.status.as_u16(), &body));
            }
            let entries = parse_entries(&body)
                .map_err(|e| Error::Protocol(format!("GET {collection}: {e}")))?;
            let n = entries.len();
            for e in entries {
                let d = entity(e.content, &e.title)?;
                out.push((e.title, d));
            }
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    /// Creates a rule on a subscription.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when it exists; `400` details name SQL errors with positions.
    pub async fn create_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
        rule: &RuleDescription,
    ) -> Result<RuleDescription> {
        let path = format!(
            "{}/Rules/{name}",
            super::subscription_path(topic, subscription)
        );
        rule_of(
            self.put_description(&path, rule.to_inner_xml("RuleDescription", true), false)
                .await?,
            &path,
        )
    }

    /// A rule, or `None` when missing.
    ///
    /// # Errors
    ///
    /// As the status says.
    pub async fn get_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
    ) -> Result<Option<RuleDescription>> {
        let path = format!(
            "{}/Rules/{name}",
            super::subscription_path(topic, subscription)
        );
        match self
            .get_entries(&management_path(&path))
            .await?
            .into_iter()
            .next()
        {
            None => Ok(None),
            Some(e) => rule_of(e.content, &path).map(Some),
        }
    }

    /// Deletes a rule; `false` when it did not exist.
    ///
    /// # Errors
    ///
    /// As the status says.
    pub async fn delete_rule(&self, topic: &str, subscription: &str, name: &str) -> Result<bool> {
        self.delete_entity(&format!(
            "{}/Rules/{name}",
            super::subscription_path(topic, subscription)
        ))
        .await
    }

    /// A subscription's rules by name.
    ///
    /// # Errors
    ///
    /// As the status says.
    pub async fn list_rules(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<Vec<(String, RuleDescription)>> {
        let path = format!("{}/Rules", super::subscription_path(topic, subscription));
        let entries = self.get_entries(&management_path(&path)).await?;
        entries
            .into_iter()
            .map(|e| Ok((e.title.clone(), rule_of(e.content, &e.title)?)))
            .collect()
    }
}

fn entity(content: EntryContent, path: &str) -> Result<EntityDescription> {
    match content {
        EntryContent::Entity(p) => Ok(p.description),
        EntryContent::Rule(_) => Err(Error::Protocol(format!(
            "{path}: expected an entity description, got a rule"
        ))),
    }
}

fn rule_of(content: EntryContent, path: &str) -> Result<RuleDescription> {
    match content {
        EntryContent::Rule(r) => Ok(r),
        EntryContent::Entity(_) => Err(Error::Protocol(format!(
            "{path}: expected a rule description"
        ))),
    }
}
