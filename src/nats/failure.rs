//! Telling a NATS failure that may pass (no connection, a timeout, no responders,
//! a stream or bucket removed for a while) from a refusal that no retry changes:
//! a message over the server's maximum payload, or a JetStream error that says
//! the message itself can never be stored. Only the first kind is retried.

use async_nats::jetstream::{self, ErrorCode};
use std::error::Error;

/// JetStream API errors about the message itself, which no retry changes.
const PERMANENT_CODES: [ErrorCode; 3] = [
    // The message is larger than the stream's (or bucket's) maximum.
    ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM,
    // Its headers are larger than the stream allows.
    ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM,
    // The stream is sealed: it takes nothing, ever.
    ErrorCode::STREAM_SEALED,
];

/// Whether `error`, or any error it was caused by, is a refusal that will not
/// change on retry. Everything else (timeouts, lost connections, no responders,
/// a missing stream, full storage) is taken as transient.
pub fn is_permanent(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if is_refusal(e) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether this one error (not its causes) is a refusal for good.
fn is_refusal(error: &(dyn Error + 'static)) -> bool {
    use jetstream::context::{PublishError, PublishErrorKind};
    if let Some(publish) = error.downcast_ref::<PublishError>() {
        return publish.kind() == PublishErrorKind::MaxPayloadExceeded;
    }
    if let Some(publish) = error.downcast_ref::<async_nats::PublishError>() {
        return publish.kind() == async_nats::PublishErrorKind::MaxPayloadExceeded;
    }
    if let Some(api) = error.downcast_ref::<jetstream::Error>() {
        return PERMANENT_CODES.contains(&api.error_code());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    use async_nats::jetstream::kv::{CreateError, CreateErrorKind, PutError, PutErrorKind};

    #[test]
    fn an_oversized_message_is_refused_for_good_however_deeply_wrapped() {
        let too_big = PublishError::new(PublishErrorKind::MaxPayloadExceeded);
        assert!(is_permanent(&too_big));
        let put = PutError::with_source(
            PutErrorKind::Publish,
            PublishError::new(PublishErrorKind::MaxPayloadExceeded),
        );
        assert!(is_permanent(&put));
        let create = CreateError::with_source(CreateErrorKind::Other, put);
        assert!(is_permanent(&create));
    }

    /// A JetStream API error as the server sends it.
    fn api_error(code: u64) -> jetstream::Error {
        let body = format!(r#"{{"code":400,"err_code":{code},"description":"refused"}}"#);
        serde_json::from_str(&body).unwrap()
    }

    #[test]
    fn api_errors_about_the_message_itself_are_refusals() {
        let too_big = PublishError::with_source(PublishErrorKind::Other, api_error(10054));
        assert!(is_permanent(&PutError::with_source(
            PutErrorKind::Ack,
            too_big
        )));
        assert!(is_permanent(&api_error(10097)));
        assert!(is_permanent(&api_error(10109)));
        // Full storage may be freed; an unknown stream may be created again.
        assert!(!is_permanent(&api_error(10047)));
        assert!(!is_permanent(&api_error(10059)));
    }

    #[test]
    fn passing_failures_are_transient() {
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::Other,
        ] {
            let put = PutError::with_source(PutErrorKind::Ack, PublishError::new(kind));
            assert!(!is_permanent(&put), "{kind:?}");
        }
        assert!(!is_permanent(&std::io::Error::other("connection reset")));
    }
}
