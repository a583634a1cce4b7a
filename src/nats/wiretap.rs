//! The KV and JetStream API requests of every client on the server, counted by
//! what they ask of which stream: a core subscription to `$KV.>` (a KV put,
//! delete or purge is a publish there) and one to `$JS.API.>` (a read of one
//! key is a direct get of the bucket's stream, a listing or a watch creates a
//! consumer on it) see a copy of each request, whoever sends it. What the
//! server sends back (the values a listing delivers) is not seen: a listing is
//! one consumer created, whatever it delivers.
//!
//! A count is taken by a marker the wiretap publishes to a subject of its own
//! and waits for: the server sends a connection its messages in order, so
//! once the marker is here, each request the server took before it is too.

use futures::stream::SelectAll;
use futures::{FutureExt, StreamExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// The subscriptions could not be made, or the server not reached to count.
#[derive(Debug, thiserror::Error)]
#[error("cannot follow the KV and API requests: {0}")]
pub struct WiretapError(#[source] async_nats::Error);

/// Requests by kind, e.g. `DIRECT.GET KV_flare_jobs` or `KV put flare_job_owners`.
#[derive(Debug, Default, Clone)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    /// Requests of `kind`.
    pub fn get(&self, kind: &str) -> u64 {
        self.0.get(kind).copied().unwrap_or(0)
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Counts) {
        for (kind, count) in &other.0 {
            *self.0.entry(kind.clone()).or_default() += count;
        }
    }

    /// One line per kind: the count over `per`, indented.
    pub fn text(&self, per: usize) -> String {
        let width = self.0.keys().map(String::len).max().unwrap_or(0);
        self.0
            .iter()
            .map(|(kind, count)| {
                format!(
                    "    {kind:<width$}  {:.2}\n",
                    *count as f64 / per.max(1) as f64
                )
            })
            .collect()
    }
}

/// Longest wait for the wiretap's own marker to come back.
const MARKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The copies of the requests, counted when asked for.
pub struct Wiretap {
    client: async_nats::Client,
    /// A subject of the wiretap's own, subscribed with the requests' subjects.
    marker: async_nats::Subject,
    requests: tokio::sync::Mutex<SelectAll<async_nats::Subscriber>>,
}

impl Wiretap {
    /// Subscribes on `client` (best a connection of its own); what is sent
    /// once the server has the subscriptions is seen.
    ///
    /// # Errors
    /// A [`WiretapError`] when the subscriptions cannot be made.
    pub async fn start(client: &async_nats::Client) -> Result<Wiretap, WiretapError> {
        let marker = async_nats::Subject::from(client.new_inbox());
        let mut subscriptions = Vec::new();
        for subject in ["$KV.>", "$JS.API.>", marker.as_str()] {
            subscriptions.push(
                client
                    .subscribe(subject.to_owned())
                    .await
                    .map_err(|e| WiretapError(e.into()))?,
            );
        }
        client.flush().await.map_err(|e| WiretapError(e.into()))?;
        Ok(Wiretap {
            client: client.clone(),
            marker,
            requests: tokio::sync::Mutex::new(futures::stream::select_all(subscriptions)),
        })
    }

    /// The requests seen since the last call (or the start). Every request
    /// the server had taken when this is called is among them: the server
    /// queues a request's copy to the wiretap before it answers the request,
    /// so the copy comes before a marker the wiretap sends itself now.
    ///
    /// # Errors
    /// A [`WiretapError`] when the marker does not come back.
    pub async fn take(&self) -> Result<Counts, WiretapError> {
        let mut requests = self.requests.lock().await;
        self.client
            .publish(self.marker.clone(), bytes::Bytes::new())
            .await
            .map_err(|e| WiretapError(e.into()))?;
        let mut counts = Counts::default();
        let mut marked = false;
        loop {
            let message = if marked {
                // Each subscription has a queue of its own: once the marker
                // is here, so is every request before it, in its queue (read
                // to its end: outside the runtime's budget, which would
                // otherwise cut the reading short).
                match tokio::task::unconstrained(requests.next()).now_or_never() {
                    Some(Some(message)) => message,
                    _ => return Ok(counts),
                }
            } else {
                match tokio::time::timeout(MARKER_TIMEOUT, requests.next()).await {
                    Ok(Some(message)) => message,
                    Ok(None) => return Err(WiretapError("the subscriptions ended".into())),
                    Err(_) => return Err(WiretapError("the marker did not come back".into())),
                }
            };
            if message.subject == self.marker {
                marked = true;
                continue;
            }
            let operation = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("KV-Operation"))
                .map(|value| value.as_str().to_lowercase());
            if let Some(kind) = kind(&message.subject, operation.as_deref()) {
                *counts.0.entry(kind).or_default() += 1;
            }
        }
    }
}

/// The kind of a request on `subject` (with the `KV-Operation` header's
/// `operation`, lower case): `KV OPERATION BUCKET` for a KV write, `VERB
/// STREAM` for an API request (the verb being the subject's upper-case tokens).
fn kind(subject: &str, operation: Option<&str>) -> Option<String> {
    if let Some(rest) = subject.strip_prefix("$KV.") {
        let bucket = rest.split('.').next()?;
        return Some(format!("KV {} {bucket}", operation.unwrap_or("put")));
    }
    let tokens: Vec<&str> = subject.strip_prefix("$JS.API.")?.split('.').collect();
    let verbs = tokens
        .iter()
        .take_while(|token| token.chars().all(|c| c.is_ascii_uppercase()))
        .count();
    let verb = tokens[..verbs].join(".");
    Some(match tokens.get(verbs) {
        Some(stream) => format!("{verb} {stream}"),
        None => verb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_what_they_ask_of_which_stream() {
        assert_eq!(
            kind("$JS.API.DIRECT.GET.KV_flare_jobs.$KV.flare_jobs.j1", None).as_deref(),
            Some("DIRECT.GET KV_flare_jobs")
        );
        assert_eq!(
            kind(
                "$JS.API.CONSUMER.CREATE.KV_flare_job_owners.abc.$KV.flare_job_owners.default.w1.>",
                None
            )
            .as_deref(),
            Some("CONSUMER.CREATE KV_flare_job_owners")
        );
        assert_eq!(kind("$JS.API.INFO", None).as_deref(), Some("INFO"));
        assert_eq!(
            kind("$KV.flare_job_owners.default.w1.j1", Some("purge")).as_deref(),
            Some("KV purge flare_job_owners")
        );
        assert_eq!(
            kind("$KV.flare_jobs.j1", None).as_deref(),
            Some("KV put flare_jobs")
        );
        assert_eq!(kind("flare.events.j1", None), None);
    }
}
