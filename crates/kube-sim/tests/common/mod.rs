//! Shared helpers of kube-sim's integration tests: a kube-sim per test and a
//! kube-rs client for it.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{Config, KubeSim};

/// How long a test waits for something that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A kube-sim on a free port, with `edit` applied to the default config.
pub async fn start(edit: impl FnOnce(&mut Config)) -> KubeSim {
    let mut config = Config::default();
    edit(&mut config);
    KubeSim::start(config).await.expect("kube-sim starts")
}

/// A kube-rs client config from the kubeconfig `sim` hands out for `user`/`token`.
pub async fn config(sim: &KubeSim, user: &str, token: &str) -> kube::Config {
    let kubeconfig =
        Kubeconfig::from_yaml(&sim.kubeconfig_for(user, token)).expect("kubeconfig parses");
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads")
}

/// A kube-rs client for `user`/`token`.
pub async fn client_for(sim: &KubeSim, user: &str, token: &str) -> kube::Client {
    kube::Client::try_from(config(sim, user, token).await).expect("client builds")
}

/// A kube-rs client for the admin.
pub async fn client(sim: &KubeSim) -> kube::Client {
    client_for(sim, "kube-sim-admin", sim.admin_token()).await
}

/// The `Status` of a request the server refused.
pub fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// pod-reader may get, list and watch pods (and their logs) in `default`; alice
/// has it.
pub const POD_READER_RBAC: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: default}
rules:
- apiGroups: ['']
  resources: [pods, pods/log]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-reads-pods, namespace: default}
subjects:
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: Role, name: pod-reader, apiGroup: rbac.authorization.k8s.io}
";
