//! Faults on demand: latency before every resource request, `429 Too Many
//! Requests` (with `Retry-After`), `403 Forbidden`, `500` or `503` for the next
//! requests that match a verb and resource, and watch streams closed once they have sent N events. Set
//! through the admin API (`/kube-sim/faults`) or [`crate::KubeSim::set_faults`].

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::resources;
use crate::status::ApiError;

/// The verbs a request can have, as RBAC names them.
pub const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The faults in force. The default is none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Milliseconds every resource request waits before it is served.
    #[serde(default)]
    pub latency_ms: u64,
    /// An error answered instead of serving matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorFault>,
    /// Every watch stream (open or later) is closed once it has sent this many
    /// events, as an API server restart or a load balancer closes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_drop_after: Option<u64>,
}

/// An injected error: `429` (with `Retry-After`), `403` (as RBAC words it),
/// `500` or `503`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorFault {
    /// `429`, `403`, `500` or `503`.
    pub code: u16,
    /// The `Retry-After` of a 429, in seconds.
    #[serde(default = "one_second")]
    pub retry_after_seconds: u64,
    /// How many matching requests fail; every one until cleared when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Only requests with this verb (`get`, `list`, `watch`, ...) fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// Only requests on this resource (`pods`, `pods/log`, ...) fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

fn one_second() -> u64 {
    1
}

impl ErrorFault {
    fn matches(&self, verb: &str, resource: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
    }

    /// The error answered; `forbidden` is the request's own `403`.
    fn to_error(&self, forbidden: impl FnOnce() -> ApiError) -> ApiError {
        match self.code {
            429 => ApiError::TooManyRequests {
                retry_after_seconds: self.retry_after_seconds,
            },
            403 => forbidden(),
            503 => ApiError::ServiceUnavailable("kube-sim injected fault".to_owned()),
            _ => ApiError::Internal("kube-sim injected fault".to_owned()),
        }
    }
}

/// Why a set of faults was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("error.code must be 429, 403, 500 or 503, not {0}")]
    Code(u16),
    #[error("error.verb must be one of {}", VERBS.join(", "))]
    Verb,
    #[error("error.resource must be a served resource (such as pods or pods/log)")]
    Resource,
    #[error("error.retryAfterSeconds must be at most 3600")]
    RetryAfter,
    #[error("latencyMs must be at most 60000")]
    Latency,
}

impl Faults {
    /// Refuses faults kube-sim cannot inject (and so bounds what it stores).
    pub fn validate(&self) -> Result<(), FaultError> {
        if self.latency_ms > 60_000 {
            return Err(FaultError::Latency);
        }
        let Some(error) = &self.error else {
            return Ok(());
        };
        if !matches!(error.code, 429 | 403 | 500 | 503) {
            return Err(FaultError::Code(error.code));
        }
        if error.retry_after_seconds > 3600 {
            return Err(FaultError::RetryAfter);
        }
        if error.verb.as_deref().is_some_and(|v| !VERBS.contains(&v)) {
            return Err(FaultError::Verb);
        }
        if error.resource.as_deref().is_some_and(|r| !served(r)) {
            return Err(FaultError::Resource);
        }
        Ok(())
    }
}

/// Whether `path` (`pods`, `pods/log`) names a served resource or subresource.
fn served(path: &str) -> bool {
    let (name, sub) = match path.split_once('/') {
        Some((name, sub)) => (name, Some(sub)),
        None => (path, None),
    };
    resources::ALL
        .iter()
        .any(|r| r.name == name && sub.is_none_or(|s| r.subresources.contains(&s)))
}

/// The faults of one kube-sim, shared by every request.
#[derive(Default)]
pub struct FaultState {
    current: Mutex<Faults>,
}

impl FaultState {
    fn lock(&self) -> MutexGuard<'_, Faults> {
        // Faults are replaced whole, so a poisoned lock holds a consistent value.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the faults in force.
    pub fn set(&self, faults: Faults) -> Result<(), FaultError> {
        faults.validate()?;
        *self.lock() = faults;
        Ok(())
    }

    /// The faults in force (an error whose count is spent is gone).
    pub fn get(&self) -> Faults {
        self.lock().clone()
    }

    /// How long a resource request waits before it is served.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().latency_ms)
    }

    /// The error to answer a request with `verb` on `resource` with, if one is
    /// injected (`forbidden`: the request's own `403`); it counts against the
    /// error's `count`.
    pub fn take_error(
        &self,
        verb: &str,
        resource: &str,
        forbidden: impl FnOnce() -> ApiError,
    ) -> Option<ApiError> {
        let mut faults = self.lock();
        let fault = faults
            .error
            .as_mut()
            .filter(|e| e.matches(verb, resource))?;
        let error = fault.to_error(forbidden);
        let spent = match &mut fault.count {
            Some(n) if *n <= 1 => true,
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        };
        if spent {
            faults.error = None;
        }
        Some(error)
    }

    /// After how many events a watch stream is closed, if at all.
    pub fn watch_drop_after(&self) -> Option<u64> {
        self.lock().watch_drop_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(count: Option<u64>) -> Faults {
        Faults {
            error: Some(ErrorFault {
                code: 429,
                retry_after_seconds: 2,
                count,
                verb: Some("get".to_owned()),
                resource: Some("pods".to_owned()),
            }),
            ..Faults::default()
        }
    }

    #[test]
    fn an_error_hits_matching_requests_until_its_count_is_spent() {
        let state = FaultState::default();
        state.set(error(Some(2))).expect("valid");
        let take = |verb, resource| state.take_error(verb, resource, || unreachable!());
        assert_eq!(take("list", "pods"), None);
        assert_eq!(take("get", "pods/log"), None);
        let e = take("get", "pods").expect("first");
        assert_eq!((e.code(), e.retry_after()), (429, Some(2)));
        assert!(take("get", "pods").is_some());
        assert_eq!(take("get", "pods"), None);
        assert_eq!(state.get(), Faults::default());
    }

    #[test]
    fn a_403_is_the_requests_own_and_a_503_is_unavailable() {
        let state = FaultState::default();
        let mut faults = error(Some(1));
        faults.error.as_mut().expect("error").code = 403;
        state.set(faults.clone()).expect("valid");
        let forbidden = || ApiError::Unauthorized;
        assert_eq!(
            state.take_error("get", "pods", forbidden),
            Some(forbidden())
        );
        faults.error.as_mut().expect("error").code = 503;
        state.set(faults).expect("valid");
        let e = state
            .take_error("get", "pods", || unreachable!())
            .expect("a 503");
        assert_eq!((e.code(), e.reason()), (503, "ServiceUnavailable"));
    }

    #[test]
    fn faults_that_cannot_be_injected_are_refused() {
        let mut f = error(None);
        assert_eq!(f.validate(), Ok(()));
        f.error.as_mut().expect("error").code = 502;
        assert_eq!(f.validate(), Err(FaultError::Code(502)));
        let mut f = error(None);
        f.error.as_mut().expect("error").verb = Some("steal".to_owned());
        assert_eq!(f.validate(), Err(FaultError::Verb));
        let mut f = error(None);
        f.error.as_mut().expect("error").resource = Some("pods/exec".to_owned());
        assert_eq!(f.validate(), Err(FaultError::Resource));
        let parsed: Result<Faults, _> = serde_json::from_str(r#"{"latencyMs": 5, "bogus": 1}"#);
        assert!(parsed.is_err());
    }
}
