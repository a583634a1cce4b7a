//! The Kubernetes backend's options: flags `--kubeconfig`, `--kube-context` and
//! `--k8s-*`, variables `FLARE_KUBECONFIG`, `FLARE_KUBE_CONTEXT` and `FLARE_K8S_*`,
//! and the `[k8s]` table of the config file, merged like every other option
//! (flag > environment > file > default).

use super::options::{options, value_by_text};
use super::values::{BadValue, Capability, JobLimits, NumericUser};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

options! {
    /// The Kubernetes options as each layer gives them (flags and environment,
    /// or the `[k8s]` table).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct K8sArgs in "k8s" {
        /// Kubeconfig file of the cluster pods run in
        kubeconfig: PathBuf {
            flag: "kubeconfig",
            env: "FLARE_KUBECONFIG",
            default: text("KUBECONFIG, else ~/.kube/config, else the in-cluster service account"),
            example: "\"/etc/flare-launcher/kubeconfig\"",
        },
        /// Context of the kubeconfig to use
        context: String {
            flag: "kube-context",
            env: "FLARE_KUBE_CONTEXT",
            default: text("its current context"),
            example: "\"site-1\"",
        },
        /// Namespace of the jobs' pods
        namespace: String {
            flag: "k8s-namespace",
            env: "FLARE_K8S_NAMESPACE",
            default: text("the kubeconfig's or the service account's, else default"),
            example: "\"flare\"",
        },
        /// Service account the jobs' pods run as (its token is not mounted unless a pod template asks)
        service_account: String {
            flag: "k8s-service-account",
            env: "FLARE_K8S_SERVICE_ACCOUNT",
            default: text("the namespace's default"),
            example: "\"flare-job\"",
        },
        /// Secrets of registry credentials for the pods' image pulls, comma-separated
        image_pull_secrets: Vec<String> {
            flag: "k8s-image-pull-secrets",
            env: "FLARE_K8S_IMAGE_PULL_SECRETS",
            default: text("none"),
            example: "[\"regcred\"]",
            clap: (value_delimiter = ','),
        },
        /// Node labels pods must match, KEY=VALUE, comma-separated
        node_selector: Vec<NodeLabel> {
            flag: "k8s-node-selector",
            env: "FLARE_K8S_NODE_SELECTOR",
            default: text("none"),
            example: "[\"nvidia.com/gpu.present=true\"]",
            clap: (value_delimiter = ','),
        },
        /// Taints pods tolerate, KEY[=VALUE][:EFFECT], comma-separated
        tolerations: Vec<Toleration> {
            flag: "k8s-tolerations",
            env: "FLARE_K8S_TOLERATIONS",
            default: text("none"),
            example: "[\"nvidia.com/gpu:NoSchedule\"]",
            clap: (value_delimiter = ','),
        },
        /// User the job containers run as, UID[:GID]; pods always have runAsNonRoot, no privilege escalation and no capabilities
        user: PodUser {
            flag: "k8s-user",
            env: "FLARE_K8S_USER",
            default: text("the image's, which must not be root"),
            example: "\"1000:1000\"",
        },
        /// Capabilities job containers get back (all are dropped), comma-separated (NET_BIND_SERVICE)
        cap_add: Vec<Capability> {
            flag: "k8s-cap-add",
            env: "FLARE_K8S_CAP_ADD",
            default: text("none"),
            example: "[\"NET_BIND_SERVICE\"]",
            clap: (value_delimiter = ','),
        },
        /// Job containers get a read-only root file system, with a writable emptyDir at /tmp
        read_only_root: bool {
            flag: "k8s-read-only-root",
            env: "FLARE_K8S_READ_ONLY_ROOT",
            default: value(false),
        },
        /// Memory limit in MiB of a pod whose request names none (`resources.memory_mb`)
        memory_mb: u64 {
            flag: "k8s-memory-mb",
            env: "FLARE_K8S_MEMORY_MB",
            default: text("none, the namespace's LimitRange if any"),
            example: "8192",
        },
        /// CPU limit of a pod whose request names none (`resources.cpus`)
        cpus: f64 {
            flag: "k8s-cpus",
            env: "FLARE_K8S_CPUS",
            default: text("none, the namespace's LimitRange if any"),
            example: "4.0",
        },
        /// Secrets a job may mount (`secret:NAME`), exact names or globs (`*`, `?`), comma-separated; --k8s-nats-secret never
        allowed_secrets: Vec<String> {
            flag: "k8s-allowed-secrets",
            env: "FLARE_K8S_ALLOWED_SECRETS",
            default: text("none, no secret mounts"),
            example: "[\"fl-job-*\"]",
            clap: (value_delimiter = ','),
        },
        /// PersistentVolumeClaims a job may mount (`pvc:NAME`), exact names or globs (`*`, `?`), comma-separated
        allowed_claims: Vec<String> {
            flag: "k8s-allowed-claims",
            env: "FLARE_K8S_ALLOWED_CLAIMS",
            default: text("none, no claim mounts"),
            example: "[\"fl-data\", \"fl-models-*\"]",
            clap: (value_delimiter = ','),
        },
        /// Secret holding the worker's own NATS credentials, which no job may mount whatever --k8s-allowed-secrets says
        nats_secret: String {
            flag: "k8s-nats-secret",
            env: "FLARE_K8S_NATS_SECRET",
            default: value("flare-launcher-nats".into()),
        },
        /// Size limit of an `emptydir:` mount, in MiB
        emptydir_size_mb: u64 {
            flag: "k8s-emptydir-size-mb",
            env: "FLARE_K8S_EMPTYDIR_SIZE_MB",
            default: text("none"),
            example: "1024",
        },
        /// Seconds an ended job's pod is kept (for debugging) before it is deleted
        keep_s: u64 {
            flag: "k8s-keep-s",
            env: "FLARE_K8S_KEEP_S",
            default: value(0),
        },
        /// Seconds a stop keeps trying, past the job's grace, until the pod's end is confirmed; then the job ends lost (StopUnconfirmed)
        stop_patience_s: u64 {
            flag: "k8s-stop-patience-s",
            env: "FLARE_K8S_STOP_PATIENCE_S",
            default: value(120),
        },
        /// Seconds a job's node may stay not ready (or its pod's deletion unconfirmed past its grace period) before the job ends `lost` (`NodeLost`; `StopUnconfirmed` if it was being stopped) and its pod is deleted without grace
        node_lost_after_s: u64 {
            flag: "node-lost-after",
            env: "FLARE_NODE_LOST_AFTER_S",
            default: value(60),
        },
        /// YAML or JSON pod the jobs' pods are merged onto (tolerations, affinity, annotations, ...)
        pod_template: PathBuf {
            flag: "k8s-pod-template",
            env: "FLARE_K8S_POD_TEMPLATE",
            default: text("none"),
            example: "\"/etc/flare-launcher/pod-template.yaml\"",
        },
    }
}

impl K8sArgs {
    /// The resolved options, defaults applied.
    pub fn config(&self) -> K8sConfig {
        K8sConfig {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            image_pull_secrets: self.image_pull_secrets.clone().unwrap_or_default(),
            node_selector: self.node_selector.clone().unwrap_or_default(),
            tolerations: self.tolerations.clone().unwrap_or_default(),
            user: self.user,
            cap_add: self.cap_add.clone().unwrap_or_default(),
            read_only_root: self.read_only_root(),
            default_limits: JobLimits {
                memory_mb: self.memory_mb,
                cpus: self.cpus,
            },
            allowed_secrets: self.allowed_secrets.clone().unwrap_or_default(),
            allowed_claims: self.allowed_claims.clone().unwrap_or_default(),
            nats_secret: self.nats_secret(),
            emptydir_size_mb: self.emptydir_size_mb,
            keep: Duration::from_secs(self.keep_s()),
            stop_patience: Duration::from_secs(self.stop_patience_s()),
            node_lost_after: Duration::from_secs(self.node_lost_after_s()),
            pod_template: self.pod_template.clone(),
        }
    }
}

/// The Kubernetes backend's options, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct K8sConfig {
    /// The kubeconfig; `None`: `KUBECONFIG`, `~/.kube/config`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Its context; `None`: the current one.
    pub context: Option<String>,
    /// The pods' namespace; `None`: the configuration's default.
    pub namespace: Option<String>,
    /// The pods' service account; `None`: the namespace's default.
    pub service_account: Option<String>,
    /// Image pull secrets of every pod.
    pub image_pull_secrets: Vec<String>,
    /// Node labels pods must match.
    pub node_selector: Vec<NodeLabel>,
    /// Taints pods tolerate.
    pub tolerations: Vec<Toleration>,
    /// The user containers run as; `None`: the image's (never root).
    pub user: Option<PodUser>,
    /// Capabilities job containers get back.
    pub cap_add: Vec<Capability>,
    /// Whether job containers get a read-only root file system (and an
    /// emptyDir at /tmp).
    pub read_only_root: bool,
    /// The limits of a pod whose request names none.
    pub default_limits: JobLimits,
    /// Secrets jobs may mount: names or globs.
    pub allowed_secrets: Vec<String>,
    /// Claims jobs may mount: names or globs.
    pub allowed_claims: Vec<String>,
    /// The Secret of the worker's NATS credentials, never mounted.
    pub nats_secret: String,
    /// Size limit of `emptydir:` mounts in MiB.
    pub emptydir_size_mb: Option<u64>,
    /// How long an ended job's pod is kept before it is deleted.
    pub keep: Duration,
    /// How long a stop keeps trying, past the job's grace, until the pod's
    /// end is confirmed.
    pub stop_patience: Duration,
    /// How long a job's node may be not ready, or its pod's deletion go
    /// unconfirmed past its grace period, before the job ends `lost`.
    pub node_lost_after: Duration,
    /// A pod the jobs' pods are merged onto.
    pub pod_template: Option<PathBuf>,
}

/// A Kubernetes setting the types allow but the backend cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidK8sConfig {
    /// Pods are kept longer than the events stream keeps events.
    #[error("k8s keep time must be at most {max} s", max = super::MAX_RETENTION_S)]
    Keep,
    /// A default limit no pod can be held to.
    #[error("k8s memory must be at least 1 MiB and k8s cpus a number above 0")]
    DefaultLimits,
}

impl K8sConfig {
    /// Checks values the types allow but the backend cannot use.
    ///
    /// # Errors
    /// An [`InvalidK8sConfig`] naming the bad value.
    pub fn validate(&self) -> Result<(), InvalidK8sConfig> {
        if self.keep > Duration::from_secs(super::MAX_RETENTION_S) {
            return Err(InvalidK8sConfig::Keep);
        }
        if !self.default_limits.is_valid() {
            return Err(InvalidK8sConfig::DefaultLimits);
        }
        Ok(())
    }
}

/// A node label pods must match: `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLabel {
    /// The label's key.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl FromStr for NodeLabel {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, BadValue> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(NodeLabel {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(BadValue::new(text, "must be KEY=VALUE")),
        }
    }
}

impl fmt::Display for NodeLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// A taint pods tolerate: `KEY[=VALUE][:EFFECT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    /// The taint's key.
    pub key: String,
    /// Its value; `None`: any value (operator `Exists`).
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; `None`: every effect.
    pub effect: Option<String>,
}

impl FromStr for Toleration {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, BadValue> {
        let (taint, effect) = match text.rsplit_once(':') {
            Some((taint, effect)) => (taint, Some(effect)),
            None => (text, None),
        };
        if let Some(effect) = effect
            && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            return Err(BadValue::new(
                text,
                "has an effect other than NoSchedule, PreferNoSchedule or NoExecute",
            ));
        }
        let (key, value) = match taint.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (taint, None),
        };
        if key.is_empty() {
            return Err(BadValue::new(text, "must be KEY[=VALUE][:EFFECT]"));
        }
        Ok(Toleration {
            key: key.to_owned(),
            value,
            effect: effect.map(str::to_owned),
        })
    }
}

impl fmt::Display for Toleration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(value) = &self.value {
            write!(f, "={value}")?;
        }
        if let Some(effect) = &self.effect {
            write!(f, ":{effect}")?;
        }
        Ok(())
    }
}

/// The user job containers run as: `UID[:GID]`, by number, never root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodUser(pub NumericUser);

impl FromStr for PodUser {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, BadValue> {
        let bad = || BadValue::new(text, "must be UID or UID:GID (numbers, UID not 0)");
        let user: NumericUser = text.parse().map_err(|_| bad())?;
        if user.uid == 0 {
            return Err(bad());
        }
        Ok(PodUser(user))
    }
}

impl fmt::Display for PodUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

value_by_text!(NodeLabel, Toleration, PodUser);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_tolerations_and_users_are_checked() {
        assert_eq!(
            "gpu=a100".parse(),
            Ok(NodeLabel {
                key: "gpu".into(),
                value: "a100".into()
            })
        );
        assert!("gpu".parse::<NodeLabel>().is_err());
        assert_eq!(
            "nvidia.com/gpu:NoSchedule".parse(),
            Ok(Toleration {
                key: "nvidia.com/gpu".into(),
                value: None,
                effect: Some("NoSchedule".into())
            })
        );
        assert_eq!(
            "team=fl".parse::<Toleration>().unwrap().value.as_deref(),
            Some("fl")
        );
        assert!("x:Sometimes".parse::<Toleration>().is_err());
        assert!(":NoSchedule".parse::<Toleration>().is_err());
        assert_eq!(
            "1000:2000".parse(),
            Ok(PodUser(NumericUser {
                uid: 1000,
                gid: Some(2000)
            }))
        );
        assert!("0".parse::<PodUser>().is_err(), "never root");
        assert!("root".parse::<PodUser>().is_err());
        assert!(K8sArgs::default().config().validate().is_ok());
    }
}
