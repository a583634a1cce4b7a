//! How many copies a JetStream cluster keeps of each stream and bucket the worker
//! makes (`--replicas`): one value, put into every stream's and bucket's
//! configuration here, and brought to streams that exist with fewer.
//!
//! A stream that exists with fewer replicas is raised to the count (JetStream
//! copies its messages to the new peers while it serves), and the worker waits,
//! for a while, until the new copies have caught up: until then the server
//! refuses new consumers of the stream ("insufficient resources"). One with more is left
//! as it is, so that a worker started without the setting never lowers what a
//! cluster keeps. Both are logged. A count the server cannot give (more than one
//! on a server outside a cluster, more than the cluster has servers) fails the
//! worker's start with the server's reason.

use super::setup::{SetupError, jetstream_error};
use async_nats::jetstream::{self, kv, stream};
use std::time::Duration;

/// Most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;
/// How long a worker waits for the new copies of a stream it raised to catch up.
const CATCH_UP: Duration = Duration::from_secs(30);

/// The replica count of the streams and buckets a worker makes, 1 to
/// [`MAX_REPLICAS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas(usize);

impl Default for Replicas {
    /// One copy: what a single server keeps.
    fn default() -> Self {
        Replicas(1)
    }
}

impl Replicas {
    /// `count` replicas, if JetStream keeps that many (1 to [`MAX_REPLICAS`]).
    pub fn new(count: usize) -> Option<Replicas> {
        (1..=MAX_REPLICAS)
            .contains(&count)
            .then_some(Replicas(count))
    }

    /// The count.
    pub fn count(self) -> usize {
        self.0
    }

    /// A stream's configuration with this replica count.
    pub fn stream(self, config: stream::Config) -> stream::Config {
        stream::Config {
            num_replicas: self.0,
            ..config
        }
    }

    /// A bucket's configuration with this replica count.
    pub fn bucket(self, config: kv::Config) -> kv::Config {
        kv::Config {
            num_replicas: self.0,
            ..config
        }
    }

    /// Raises `stream`'s replicas to this count if it has fewer; leaves it, with a
    /// warning, if it has more. Returns the stream as it is now.
    ///
    /// # Errors
    /// [`SetupError::JetStream`] naming the stream when the server refuses the
    /// count.
    pub async fn apply(
        self,
        js: &jetstream::Context,
        stream: stream::Stream,
    ) -> Result<stream::Stream, SetupError> {
        let config = &stream.cached_info().config;
        // 0 is what a stream made without a count reports: one.
        let existing = config.num_replicas.max(1);
        let name = config.name.clone();
        if existing > self.0 {
            tracing::warn!(stream = %name, replicas = existing, configured = self.0,
                "the stream has more replicas than this worker's --replicas; left as it is (lower it with `nats stream edit` if meant)");
        }
        if existing >= self.0 {
            return Ok(stream);
        }
        let raised = self.stream(config.clone());
        js.update_stream(raised).await.map_err(|e| {
            jetstream_error(format!("raise the replicas of stream {name} to {}", self.0))(e.into())
        })?;
        tracing::warn!(stream = %name, from = existing, to = self.0, "raised the stream's replicas to this worker's --replicas");
        self.caught_up(js, &name).await
    }

    /// The stream `name` once it has this many current copies, or as it is
    /// after [`CATCH_UP`] (logged).
    async fn caught_up(
        self,
        js: &jetstream::Context,
        name: &str,
    ) -> Result<stream::Stream, SetupError> {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let mut stream = js
                .get_stream(name)
                .await
                .map_err(|e| jetstream_error(format!("open stream {name}"))(e.into()))?;
            let current = match stream.info().await {
                // The leader, and each follower that is current with it.
                Ok(info) => info.cluster.as_ref().map_or(0, |cluster| {
                    usize::from(cluster.leader.is_some())
                        + cluster.replicas.iter().filter(|peer| peer.current).count()
                }),
                Err(_) => 0,
            };
            if current >= self.0 {
                return Ok(stream);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(stream = %name, current, replicas = self.0, "the stream's new copies have not caught up yet; going on");
                return Ok(stream);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_what_jetstream_keeps_and_go_into_every_configuration() {
        assert_eq!(Replicas::new(0), None);
        assert_eq!(Replicas::new(MAX_REPLICAS + 1), None);
        let three = Replicas::new(3).unwrap();
        assert_eq!(three.count(), 3);
        assert_eq!(Replicas::default().count(), 1);
        let stream = three.stream(stream::Config {
            name: "S".into(),
            ..Default::default()
        });
        assert_eq!((stream.name.as_str(), stream.num_replicas), ("S", 3));
        let bucket = three.bucket(kv::Config {
            bucket: "b".into(),
            history: 5,
            ..Default::default()
        });
        assert_eq!((bucket.history, bucket.num_replicas), (5, 3));
    }
}
