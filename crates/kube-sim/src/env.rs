//! What a container's process gets: its command line (with `$(VAR)` references
//! expanded), its environment (`env`, `valueFrom`, `envFrom` from secrets and
//! config maps), its working directory, and where its program is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::resources::{CONFIGMAPS, SECRETS};
use crate::store::Key;

/// A process ready to start.
pub struct Process {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub dir: PathBuf,
}

/// The value of `key` in the secret or config map `name`, or why not.
fn lookup(
    cluster: &Cluster,
    ns: &str,
    secret: bool,
    name: &str,
    key: &str,
) -> Result<Option<String>, String> {
    let (resource, what) = if secret {
        (SECRETS.name, "secret")
    } else {
        (CONFIGMAPS.name, "configmap")
    };
    let object = cluster
        .store
        .get(&Key::new(resource, ns, name))
        .ok_or_else(|| format!("{what} \"{name}\" not found"))?;
    if secret {
        Ok(object["data"][key]
            .as_str()
            .and_then(|b| STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    } else {
        Ok(object["data"][key].as_str().map(str::to_owned))
    }
}

/// The value of a `fieldRef` path of `pod`.
fn field(pod: &Value, path: &str) -> String {
    let meta = &pod["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    match path {
        "metadata.name" => text(&meta["name"]),
        "metadata.namespace" => text(&meta["namespace"]),
        "metadata.uid" => text(&meta["uid"]),
        "spec.nodeName" => text(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => text(&pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.hostIP" => "127.0.0.1".to_owned(),
        other => other
            .strip_prefix("metadata.labels['")
            .map(|l| (l, "labels"))
            .or_else(|| {
                other
                    .strip_prefix("metadata.annotations['")
                    .map(|a| (a, "annotations"))
            })
            .and_then(|(rest, map)| rest.strip_suffix("']").map(|k| text(&meta[map][k])))
            .unwrap_or_default(),
    }
}

/// Expands `$(NAME)` with `env`; `$$(NAME)` stays literal, unknown names stay.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("$(") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("$(");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        match rest[i + 2..].find(')') {
            Some(end) => {
                let name = &rest[i + 2..i + 2 + end];
                match env.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[i..i + 3 + end]),
                }
                rest = &rest[i + 3 + end..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The process for container `spec` of `pod`; `Err` says what is missing.
pub fn resolve(cluster: &Cluster, pod: &Value, spec: &Value) -> Result<Process, String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_owned(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
    );
    env.insert("HOSTNAME".to_owned(), crate::objects::name(pod).to_owned());
    if let Ok(home) = std::env::var("HOME") {
        env.insert("HOME".to_owned(), home);
    }
    for source in spec["envFrom"].as_array().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or_default();
        for (secret, field_name) in [(true, "secretRef"), (false, "configMapRef")] {
            let Some(name) = source[field_name]["name"].as_str() else {
                continue;
            };
            let resource = if secret {
                SECRETS.name
            } else {
                CONFIGMAPS.name
            };
            match cluster.store.get(&Key::new(resource, ns, name)) {
                Some(object) => {
                    for (k, v) in object["data"].as_object().into_iter().flatten() {
                        let value = if secret {
                            v.as_str()
                                .and_then(|b| STANDARD.decode(b).ok())
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                        } else {
                            v.as_str().map(str::to_owned)
                        };
                        env.insert(format!("{prefix}{k}"), value.unwrap_or_default());
                    }
                }
                None if source[field_name]["optional"] == true => {}
                None => {
                    return Err(format!(
                        "{} \"{name}\" not found",
                        if secret { "secret" } else { "configmap" }
                    ));
                }
            }
        }
    }
    for var in spec["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let from = &var["valueFrom"];
        let value = if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            field(pod, path)
        } else if let Some(r) = from["secretKeyRef"]
            .as_object()
            .or(from["configMapKeyRef"].as_object())
        {
            let secret = from["secretKeyRef"].is_object();
            let (ref_name, key) = (
                r.get("name").and_then(Value::as_str).unwrap_or_default(),
                r.get("key").and_then(Value::as_str).unwrap_or_default(),
            );
            match lookup(cluster, ns, secret, ref_name, key) {
                Ok(Some(v)) => v,
                Ok(None) | Err(_) if r.get("optional") == Some(&Value::Bool(true)) => continue,
                Ok(None) => {
                    return Err(format!(
                        "couldn't find key {key} in {} {ns}/{ref_name}",
                        if secret { "Secret" } else { "ConfigMap" }
                    ));
                }
                Err(e) => return Err(e),
            }
        } else {
            expand(var["value"].as_str().unwrap_or_default(), &env)
        };
        env.insert(name.to_owned(), value);
    }
    let words = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| expand(s, &env))
            .collect()
    };
    let mut argv = words(&spec["command"]);
    argv.extend(words(&spec["args"]));
    if argv.is_empty() {
        // No entrypoint is known for an image: the container idles until stopped.
        argv = vec!["sleep".to_owned(), "infinity".to_owned()];
    }
    let dir = match spec["workingDir"].as_str().filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => cluster.pod_dir(crate::objects::uid(pod)),
    };
    Ok(Process { argv, env, dir })
}

/// Where `program` is: itself when it names a path, else the first executable
/// file of that name in the directories of `search` (the container's `PATH`),
/// as `execvp` would find it. Spawned by its path, with an environment of its
/// own, a process starts without kube-sim's memory being copied first (a search
/// for it would need a fork, whose cost grows with kube-sim's memory).
pub fn find_program(program: &str, search: Option<&str>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return PathBuf::from(program);
    }
    search
        .into_iter()
        .flat_map(|dirs| dirs.split(':'))
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_known_references_only() {
        let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn a_program_is_found_on_the_path_as_execvp_finds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("written");
        let search = format!("/nonexistent:{}", dir.path().display());
        // Not executable: skipped, as execvp skips it.
        assert_eq!(find_program("tool", Some(&search)), PathBuf::from("tool"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(find_program("tool", Some(&search)), tool);
        assert_eq!(
            find_program("./tool", Some(&search)),
            PathBuf::from("./tool")
        );
        assert_eq!(find_program("tool", None), PathBuf::from("tool"));
    }
}
