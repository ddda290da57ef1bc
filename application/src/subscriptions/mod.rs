//! Following the log: the one mechanism behind every door that delivers events as they are
//! appended (durable consumers, WebSocket, SSE, consumer groups, webhooks, pipelines).
//!
//! - [`feed`]: [`CommitFeed`], the commit notifications of the append path, one broadcast per
//!   commit group, published by the store adapters.
//! - [`subscription`]: [`Subscription`], catch-up from storage then live from the feed, with no
//!   gap and no duplicate at the seam, scoped to a tenant and an [`EventFilter`].
//!
//! [`EventFilter`]: allsource_domain::EventFilter

pub mod feed;
pub mod subscription;

#[cfg(test)]
mod tests;

pub use feed::{CommitFeed, CommitGroup};
pub use subscription::{
    CATCH_UP_PAGE, Delivery, Subscription, SubscriptionCounters, SubscriptionError,
};
