//! Time: lock expiry, scheduled activation, time to live, duplicate history and idle
//! deletion, applied by the sweeper and by moves of the manual clock.

use chrono::{DateTime, Utc};
use servicebus_wire::EntityKind;

use super::runtime::{self, QueueSettings};
use super::{Broker, Error, Result};

impl Broker {
    /// Applies time to every queue and subscription: lock expiry, scheduled activation, TTL.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn sweep(&self) -> Result<()> {
        let now = self.clock.now();
        self.delete_idle(now).await?;
        for entity in self.runtime.all() {
            let description = entity.description();
            if description.requires_duplicate_detection {
                let mut writes = Vec::new();
                runtime::lock(&entity.seen).expire(
                    entity.id,
                    description.duplicate_detection_history_time_window,
                    now,
                    &mut writes,
                );
                if !writes.is_empty() {
                    self.store.apply(writes).await?;
                }
            }
            if let Some(queue) = &entity.queue {
                let mut effects = Vec::new();
                queue.sweep(&QueueSettings::of(&description), now, &mut effects);
                self.persist(entity.id, effects).await?;
            }
        }
        Ok(())
    }

    /// Deletes entities unused for their `AutoDeleteOnIdle` (a topic with its subscriptions).
    async fn delete_idle(&self, now: DateTime<Utc>) -> Result<()> {
        for entity in self.runtime.all().into_iter().filter(|e| e.is_idle(now)) {
            // A subscription's own name has no '/': the topic is everything before the last
            // `/Subscriptions/`.
            let outcome = match entity.path.rsplit_once("/Subscriptions/") {
                Some((topic, sub)) if entity.kind == EntityKind::Subscription => {
                    self.delete_subscription(topic, sub).await
                }
                _ => self.delete_entity(&entity.path).await,
            };
            match outcome {
                Ok(()) => tracing::info!(entity = %entity.path, "deleted after AutoDeleteOnIdle"),
                // Deleted meanwhile (with its topic, or by a client): nothing to do.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves a manual clock forward and applies the new time at once.
    ///
    /// # Errors
    ///
    /// [`Error::ClockNotManual`] with the system clock, [`Error::ClockOutOfRange`] for a
    /// move backwards or past
    /// [`crate::Clock::LATEST`] (the clock stays); [`Error::Store`].
    pub async fn advance_clock(&self, by: chrono::Duration) -> Result<DateTime<Utc>> {
        if !matches!(self.clock, crate::clock::Clock::Manual(_)) {
            return Err(Error::ClockNotManual);
        }
        let now = self
            .clock
            .advance(by)
            .ok_or_else(|| Error::ClockOutOfRange {
                latest: crate::Clock::LATEST,
                now: self.clock.now(),
            })?;
        self.sweep().await?;
        Ok(now)
    }
}
