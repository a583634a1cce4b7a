//! The Kubernetes backend's options: flags `--kubeconfig`, `--kube-context` and
//! `--k8s-*`, variables `FLARE_KUBECONFIG`, `FLARE_KUBE_CONTEXT` and `FLARE_K8S_*`,
//! and the `[k8s]` table of the config file, merged like every other option
//! (flag > environment > file > default).

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The Kubernetes options as each layer gives them (flags and environment, or
/// the `[k8s]` table). Each flag has an id of its own (its long name), so that
/// none shadows another option of the same field name.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sArgs {
    /// Kubeconfig file of the cluster pods run in [default: KUBECONFIG, else ~/.kube/config, else the in-cluster service account]
    #[arg(id = "kubeconfig", long = "kubeconfig", env = "FLARE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use [default: its current context]
    #[arg(id = "kube-context", long = "kube-context", env = "FLARE_KUBE_CONTEXT")]
    pub context: Option<String>,
    /// Namespace of the jobs' pods [default: the kubeconfig's or the service account's, else default]
    #[arg(
        id = "k8s-namespace",
        long = "k8s-namespace",
        env = "FLARE_K8S_NAMESPACE"
    )]
    pub namespace: Option<String>,
    /// Service account the jobs' pods run as [default: the namespace's default]
    #[arg(
        id = "k8s-service-account",
        long = "k8s-service-account",
        env = "FLARE_K8S_SERVICE_ACCOUNT"
    )]
    pub service_account: Option<String>,
    /// Secrets of registry credentials for the pods' image pulls, comma-separated [default: none]
    #[arg(
        id = "k8s-image-pull-secrets",
        long = "k8s-image-pull-secrets",
        env = "FLARE_K8S_IMAGE_PULL_SECRETS",
        value_delimiter = ','
    )]
    pub image_pull_secrets: Option<Vec<String>>,
    /// Node labels pods must match, KEY=VALUE, comma-separated [default: none]
    #[arg(
        id = "k8s-node-selector",
        long = "k8s-node-selector",
        env = "FLARE_K8S_NODE_SELECTOR",
        value_delimiter = ','
    )]
    pub node_selector: Option<Vec<String>>,
    /// Taints pods tolerate, KEY[=VALUE][:EFFECT], comma-separated [default: none]
    #[arg(
        id = "k8s-tolerations",
        long = "k8s-tolerations",
        env = "FLARE_K8S_TOLERATIONS",
        value_delimiter = ','
    )]
    pub tolerations: Option<Vec<String>>,
    /// User the job containers run as, UID[:GID]; they never run as root [default: the image's, which must not be root]
    #[arg(id = "k8s-user", long = "k8s-user", env = "FLARE_K8S_USER")]
    pub user: Option<String>,
    /// Size limit of an `emptydir:` mount, in MiB [default: none]
    #[arg(
        id = "k8s-emptydir-size-mb",
        long = "k8s-emptydir-size-mb",
        env = "FLARE_K8S_EMPTYDIR_SIZE_MB"
    )]
    pub emptydir_size_mb: Option<u64>,
    /// Seconds an ended job's pod is kept (for debugging) before it is deleted [default: 0]
    #[arg(id = "k8s-keep-s", long = "k8s-keep-s", env = "FLARE_K8S_KEEP_S")]
    pub keep_s: Option<u64>,
    /// YAML or JSON pod the jobs' pods are merged onto (tolerations, affinity, annotations, ...) [default: none]
    #[arg(
        id = "k8s-pod-template",
        long = "k8s-pod-template",
        env = "FLARE_K8S_POD_TEMPLATE"
    )]
    pub pod_template: Option<PathBuf>,
}

impl K8sArgs {
    /// `self`'s values where set, else `fallback`'s.
    pub fn or(self, fallback: K8sArgs) -> K8sArgs {
        K8sArgs {
            kubeconfig: self.kubeconfig.or(fallback.kubeconfig),
            context: self.context.or(fallback.context),
            namespace: self.namespace.or(fallback.namespace),
            service_account: self.service_account.or(fallback.service_account),
            image_pull_secrets: self.image_pull_secrets.or(fallback.image_pull_secrets),
            node_selector: self.node_selector.or(fallback.node_selector),
            tolerations: self.tolerations.or(fallback.tolerations),
            user: self.user.or(fallback.user),
            emptydir_size_mb: self.emptydir_size_mb.or(fallback.emptydir_size_mb),
            keep_s: self.keep_s.or(fallback.keep_s),
            pod_template: self.pod_template.or(fallback.pod_template),
        }
    }

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
            user: self.user.clone(),
            emptydir_size_mb: self.emptydir_size_mb,
            keep: Duration::from_secs(self.keep_s.unwrap_or(0)),
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
    /// `KEY=VALUE` node labels pods must match (checked by [`K8sConfig::validate`]).
    pub node_selector: Vec<String>,
    /// `KEY[=VALUE][:EFFECT]` taints pods tolerate.
    pub tolerations: Vec<String>,
    /// `UID[:GID]` containers run as; `None`: the image's (never root).
    pub user: Option<String>,
    /// Size limit of `emptydir:` mounts in MiB.
    pub emptydir_size_mb: Option<u64>,
    /// How long an ended job's pod is kept before it is deleted.
    pub keep: Duration,
    /// A pod the jobs' pods are merged onto.
    pub pod_template: Option<PathBuf>,
}

/// A toleration as `--k8s-tolerations` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TolerationSpec {
    /// The taint's key.
    pub key: String,
    /// Its value; `None`: any value (operator `Exists`).
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; `None`: every effect.
    pub effect: Option<String>,
}

impl K8sConfig {
    /// Checks values the types allow but the backend cannot use.
    ///
    /// # Errors
    /// A message naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        for pair in &self.node_selector {
            parse_node_selector(pair)?;
        }
        for toleration in &self.tolerations {
            parse_toleration(toleration)?;
        }
        if let Some(user) = &self.user {
            parse_user(user)?;
        }
        if self.keep > Duration::from_secs(super::MAX_RETENTION_S) {
            return Err(format!(
                "k8s keep time must be at most {} s",
                super::MAX_RETENTION_S
            ));
        }
        Ok(())
    }
}

/// A node selector entry `KEY=VALUE` as key and value.
///
/// # Errors
/// A message naming the bad entry.
pub fn parse_node_selector(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("k8s node selector {text:?} must be KEY=VALUE")),
    }
}

/// A toleration `KEY[=VALUE][:EFFECT]`.
///
/// # Errors
/// A message naming the bad toleration.
pub fn parse_toleration(text: &str) -> Result<TolerationSpec, String> {
    let (taint, effect) = match text.rsplit_once(':') {
        Some((taint, effect)) => (taint, Some(effect)),
        None => (text, None),
    };
    if let Some(effect) = effect
        && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
    {
        return Err(format!(
            "k8s toleration {text:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match taint.split_once('=') {
        Some((key, value)) => (key, Some(value.to_owned())),
        None => (taint, None),
    };
    if key.is_empty() {
        return Err(format!(
            "k8s toleration {text:?} must be KEY[=VALUE][:EFFECT]"
        ));
    }
    Ok(TolerationSpec {
        key: key.to_owned(),
        value,
        effect: effect.map(str::to_owned),
    })
}

/// A user `UID[:GID]` as numbers.
///
/// # Errors
/// A message naming the bad user.
pub fn parse_user(text: &str) -> Result<(i64, Option<i64>), String> {
    let bad = || format!("k8s user {text:?} must be UID or UID:GID (numbers, UID not 0)");
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    let uid: i64 = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(str::parse::<i64>).transpose().map_err(|_| bad())?;
    if uid <= 0 || gid.is_some_and(|gid| gid < 0) {
        return Err(bad());
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_tolerations_and_users_are_checked() {
        assert_eq!(
            parse_node_selector("gpu=a100").unwrap(),
            ("gpu".into(), "a100".into())
        );
        assert!(parse_node_selector("gpu").is_err());
        assert_eq!(
            parse_toleration("nvidia.com/gpu:NoSchedule").unwrap(),
            TolerationSpec {
                key: "nvidia.com/gpu".into(),
                value: None,
                effect: Some("NoSchedule".into())
            }
        );
        assert_eq!(
            parse_toleration("team=fl").unwrap().value.as_deref(),
            Some("fl")
        );
        assert!(parse_toleration("x:Sometimes").is_err());
        assert!(parse_toleration(":NoSchedule").is_err());
        assert_eq!(parse_user("1000:2000").unwrap(), (1000, Some(2000)));
        assert!(parse_user("0").is_err(), "never root");
        assert!(parse_user("root").is_err());
        let mut config = K8sArgs::default().config();
        assert!(config.validate().is_ok());
        config.tolerations = vec!["a:b".into()];
        assert!(config.validate().is_err());
    }
}
