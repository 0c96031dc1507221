//! Redis as a trigger: for an app with `[redis] channels` (and the exported
//! `alorig:host/redis-handler`), one subscription to `<prefix><channel>` for
//! each channel, and `on-message` run in a fresh instance per message through
//! the app's [`Invoker`] (its concurrency limit, memory budget and request
//! timeout). A lost subscription is re-made (with backoff) for as long as the
//! app is loaded. Pub/sub is fire-and-forget: messages published while the
//! subscription is down are not delivered.
//!
//! At most [`MAX_IN_FLIGHT`] messages of one app are being handled at once on
//! this host; past that the subscription is not read until one finishes (the
//! messages wait in the Redis client's buffer, not in one task each). Each
//! message's bytes are charged to the app's memory budget while its handler
//! runs (the relay charged them on the wire before); one that does not fit
//! is dropped with a warning, as pub/sub drops messages nobody can take.

use super::{RedisApp, trigger::RedisTriggerPre};
use crate::trigger::{Invoker, Outcome, WeakInvoker};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::Semaphore;

/// Messages of one app handled at once on this host, at most.
pub const MAX_IN_FLIGHT: usize = 64;

/// Starts delivering `redis`'s channels to the app behind `app`, for as long as it is loaded.
pub fn subscribe<T: Send + 'static>(
    redis: Arc<RedisApp>,
    trigger: RedisTriggerPre<T>,
    app: WeakInvoker<T>,
) {
    if redis.channels.is_empty() {
        return;
    }
    tokio::spawn(async move {
        use futures::StreamExt as _;
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut delay = Duration::from_millis(100);
        while app.alive() {
            if let Ok(mut pubsub) = redis.pubsub().await {
                let mut subscribed = true;
                for channel in &redis.channels {
                    if pubsub.subscribe(redis.channel(channel)).await.is_err() {
                        subscribed = false;
                        break;
                    }
                }
                if subscribed {
                    delay = Duration::from_millis(100);
                    tracing::info!(
                        app = redis.app(),
                        channels = redis.channels.len(),
                        "subscribed to Redis channels"
                    );
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(invoker) = app.upgrade() else { return };
                        let Some(channel) =
                            redis.strip_prefix(message.get_channel_name().as_bytes())
                        else {
                            continue;
                        };
                        let channel = String::from_utf8_lossy(channel).into_owned();
                        let Ok(permit) = in_flight.clone().acquire_owned().await else {
                            return;
                        };
                        // The copy handed to the guest is held until its
                        // handler ends: charged to the app's budget first.
                        let payload = message.get_payload_bytes();
                        let charge = match invoker.charge(payload.len() + channel.len()) {
                            Ok(charge) => charge,
                            Err(no_room) => {
                                crate::traplog::warn(
                                    invoker.name(),
                                    format_args!(
                                        "Redis message on {channel} not handled: it cannot be held: {no_room}"
                                    ),
                                );
                                continue;
                            }
                        };
                        let payload = payload.to_vec();
                        drop(message);
                        let trigger = trigger.clone();
                        tokio::spawn(async move {
                            deliver(invoker, trigger, channel, payload).await;
                            drop((permit, charge));
                        });
                    }
                    tracing::warn!(
                        app = redis.app(),
                        fault = "dependency",
                        "Redis subscription lost; subscribing again"
                    );
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    });
}

/// Runs the app's `on-message` for one message in a fresh instance.
async fn deliver<T: Send + 'static>(
    app: Invoker<T>,
    trigger: RedisTriggerPre<T>,
    channel: String,
    message: Vec<u8>,
) {
    let timeout = app.request_timeout();
    let outcome = app
        .run(Instant::now(), timeout, move |store| {
            Box::pin(async move {
                let instance = trigger.instantiate_async(&mut *store).await?;
                instance
                    .alorig_host_redis_handler()
                    .call_on_message(store, &channel, &message)
                    .await
            })
        })
        .await;
    if outcome != Outcome::Ok {
        crate::traplog::warn(
            app.name(),
            format_args!(
                "Redis message not handled ({}, fault {}): {}",
                outcome.label(),
                outcome.fault(),
                outcome.describe()
            ),
        );
    }
}
