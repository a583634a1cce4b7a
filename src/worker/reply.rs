//! Answering the requests a worker answers on its service endpoints (control,
//! output): a place for
//! each answer among a bounded number in flight, and the reply: the answer's
//! body, or an error reply, the NATS service error headers and an ErrorReply
//! body, its message bounded (it may echo the request) and, in the header, on
//! one line (a header value cannot hold CR or LF).

use crate::protocol::ErrorReply;
use crate::protocol::bounded::{bounded, one_line};
use async_nats::service::Request;
use async_nats::{HeaderMap, PublishError};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// A place for one more answer among those `in_flight` allows, once one is
/// free; `None` once `stop` is cancelled.
pub async fn place(
    in_flight: &Arc<Semaphore>,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        () = stop.cancelled() => None,
        permit = in_flight.clone().acquire_owned() => permit.ok(),
    }
}

/// A refused request, as its error reply tells it.
#[derive(Debug)]
pub struct Refused {
    /// Machine-readable kind (`bad_request`, `not_found`, ...).
    pub error: &'static str,
    /// The service error code (400, 404, ...).
    pub code: u16,
    /// What was wrong.
    pub message: String,
}

/// Answers `request` (which has a reply subject) with `answer`: the body, or
/// the error reply. Either goes through the service endpoint, whose
/// statistics count it; an error reply keeps the protocol's JSON body (the
/// service library's own error replies have none).
///
/// # Errors
/// The client's error when it cannot publish.
pub async fn send(request: &Request, answer: Result<Vec<u8>, Refused>) -> Result<(), PublishError> {
    let (headers, body) = match answer {
        Ok(body) => (HeaderMap::new(), body),
        Err(refused) => error_reply(&refused),
    };
    request.respond_with_headers(Ok(body.into()), headers).await
}

/// The headers and body of the error reply to a refused request.
pub fn error_reply(refused: &Refused) -> (HeaderMap, Vec<u8>) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Service-Error", one_line(&refused.message).as_str());
    headers.insert("Nats-Service-Error-Code", refused.code.to_string().as_str());
    let body = serde_json::to_vec(&ErrorReply {
        error: refused.error.into(),
        message: bounded(&refused.message),
    })
    .expect("an error reply always serializes");
    (headers, body)
}
