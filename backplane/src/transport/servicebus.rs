//! The Service Bus transport: one topic, one subscription per node named after it, and
//! broker-side rules so a node receives only what is for it:
//!
//! - `others`: SQL `bp_origin <> '{node}'` on messages labelled `bp-all`;
//! - `direct`: a correlation filter `To = {node}` (cheap on Azure).
//!
//! Messages carry `Label` (`bp-all` or `bp-direct`), `To` for direct ones, and the custom
//! property `bp_origin` (not `origin`: that is a standard HTTP header, which cannot carry a
//! property).

use std::time::Duration;

use super::{Audience, Delivery, Transport, TransportError, TransportResult};
use crate::ids::NodeId;
use crate::servicebus::{
    Client, CorrelationFilter, EntityDescription, EntityKind, Error, Filter, Message,
    PropertyValue, RuleAction, RuleDescription, TimeSpan, subscription_path,
};

const LABEL_ALL: &str = "bp-all";
const LABEL_DIRECT: &str = "bp-direct";
/// The custom property naming the publishing node.
const ORIGIN: &str = "bp_origin";
/// Room left for broker and custom properties within the size limit.
const PROPERTY_ALLOWANCE: usize = 1024;

/// The Service Bus transport over one topic.
#[derive(Debug, Clone)]
pub struct ServiceBusTransport {
    client: Client,
    topic: String,
    max_message_bytes: usize,
}

impl ServiceBusTransport {
    /// A transport over `topic` (created if missing, with the service's defaults).
    ///
    /// # Errors
    ///
    /// When the topic cannot be read or created.
    pub async fn new(client: Client, topic: &str) -> Result<Self, Error> {
        client
            .create_topic_if_missing(topic, &EntityDescription::defaults(EntityKind::Topic))
            .await?;
        let limit = client
            .get_entity(topic)
            .await?
            .map_or(256, |d| d.max_message_size_in_kilobytes as usize)
            * 1024;
        Ok(ServiceBusTransport {
            client,
            topic: topic.to_string(),
            max_message_bytes: limit - PROPERTY_ALLOWANCE,
        })
    }

    fn subscription(&self, node: &NodeId) -> String {
        subscription_path(&self.topic, node.as_str())
    }

    fn missing(&self, node: &NodeId, e: Error) -> TransportError {
        if e.is_not_found() {
            TransportError::NoSubscription(node.clone())
        } else {
            TransportError::from(e)
        }
    }
}

impl From<Error> for TransportError {
    /// A Service Bus client error, transient as the client classifies it.
    fn from(e: Error) -> Self {
        let transient = e.is_transient();
        TransportError::bus(e, transient)
    }
}

impl Transport for ServiceBusTransport {
    /// The peek-locked message (its lock token and sequence number settle it).
    type Handle = Box<crate::servicebus::ReceivedMessage>;

    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    async fn open(&self, node: &NodeId, idle: Duration) -> TransportResult<()> {
        // The topic itself may have been deleted (by hand, or idle): bring it back first.
        self.client
            .create_topic_if_missing(&self.topic, &EntityDescription::defaults(EntityKind::Topic))
            .await?;
        let mut description = EntityDescription::defaults(EntityKind::Subscription);
        description.auto_delete_on_idle = TimeSpan::from_std(idle);
        let others = RuleDescription {
            filter: Filter::Sql {
                expression: format!("sys.Label = '{LABEL_ALL}' AND {ORIGIN} <> '{node}'"),
                compatibility_level: 20,
                parameters: vec![],
                requires_preprocessing: None,
            },
            action: RuleAction::Empty,
            name: Some("others".into()),
        };
        let created = self
            .client
            .create_subscription_if_missing(&self.topic, node.as_str(), &description, Some(&others))
            .await?;
        if created {
            let direct = RuleDescription {
                filter: Filter::Correlation(CorrelationFilter {
                    to: Some(node.to_string()),
                    label: Some(LABEL_DIRECT.into()),
                    ..CorrelationFilter::default()
                }),
                action: RuleAction::Empty,
                name: None,
            };
            match self
                .client
                .create_rule(&self.topic, node.as_str(), "direct", &direct)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn close(&self, node: &NodeId) -> TransportResult<()> {
        self.client.delete_entity(&self.subscription(node)).await?;
        Ok(())
    }

    async fn nodes(&self) -> TransportResult<Vec<NodeId>> {
        let subs = self.client.list_subscriptions(&self.topic).await?;
        Ok(subs
            .into_iter()
            .filter_map(|(name, _)| NodeId::new(&name).ok())
            .collect())
    }

    async fn publish(
        &self,
        origin: &NodeId,
        audience: Audience<'_>,
        payload: Vec<u8>,
    ) -> TransportResult<()> {
        self.check_size(payload.len())?;
        let mut m =
            Message::new(payload).with_property(ORIGIN, PropertyValue::String(origin.to_string()));
        m.content_type = Some("application/octet-stream".into());
        match audience {
            Audience::Others => m.broker.label = Some(LABEL_ALL.into()),
            Audience::Node(to) => {
                m.broker.label = Some(LABEL_DIRECT.into());
                m.broker.to = Some(to.to_string());
            }
        }
        match self.client.send(&self.topic, &m).await {
            Err(e) if e.is_not_found() => {
                tracing::warn!(topic = %self.topic, "topic gone; re-creating it");
                self.client
                    .create_topic_if_missing(
                        &self.topic,
                        &EntityDescription::defaults(EntityKind::Topic),
                    )
                    .await?;
                self.client.send(&self.topic, &m).await?;
            }
            other => other?,
        }
        Ok(())
    }

    async fn receive(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> TransportResult<Option<Delivery<Self::Handle>>> {
        match self
            .client
            .peek_lock(&self.subscription(node), timeout)
            .await
        {
            Ok(Some(m)) => Ok(Some(Delivery {
                payload: m.body.clone(),
                delivery_count: m.broker.delivery_count.unwrap_or(1),
                handle: Some(Box::new(m)),
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(self.missing(node, e)),
        }
    }

    async fn take(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> TransportResult<Option<Delivery<Self::Handle>>> {
        match self
            .client
            .receive_and_delete(&self.subscription(node), timeout)
            .await
        {
            Ok(Some(m)) => Ok(Some(Delivery {
                payload: m.body,
                delivery_count: m.broker.delivery_count.unwrap_or(1),
                handle: None,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(self.missing(node, e)),
        }
    }

    async fn complete(&self, node: &NodeId, handle: Self::Handle) -> TransportResult<()> {
        match self.client.complete(&handle).await {
            // A lost lock means the message comes again; duplicate suppression absorbs it.
            Ok(()) | Err(Error::LockLost) => Ok(()),
            Err(e) => Err(self.missing(node, e)),
        }
    }

    async fn abandon(&self, node: &NodeId, handle: Self::Handle) -> TransportResult<()> {
        match self.client.unlock(&handle).await {
            Ok(()) | Err(Error::LockLost) => Ok(()),
            Err(e) => Err(self.missing(node, e)),
        }
    }
}
