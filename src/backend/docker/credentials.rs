//! Registry credentials for pulls, looked up by the registry an image names:
//! first the worker's own logins (`--docker-registry-login
//! REGISTRY=USER:PASSWORD_FILE`), then a Docker `config.json` (its `auths` table:
//! `auth` as base64 `USER:PASSWORD`, or `username` and `password`, or an
//! `identitytoken`). Files are read at each pull, so renewed credentials count
//! without a restart. Credential helpers (`credsStore`, `credHelpers`) are not
//! run.

use base64::Engine;
use bollard::auth::DockerCredentials;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The registry of images that name none.
const DOCKER_HUB: &str = "docker.io";

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// A registry login from the worker's configuration: the password stays in a
/// file of its own (never on a command line or in the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryLogin {
    /// The registry host (`HOST[:PORT]`, `docker.io` for Docker Hub).
    pub registry: String,
    /// The user name.
    pub username: String,
    /// The file holding the password (a trailing newline is dropped).
    pub password_file: PathBuf,
}

impl RegistryLogin {
    /// Parses `REGISTRY=USER:PASSWORD_FILE`.
    ///
    /// # Errors
    /// A message naming the bad login.
    pub fn parse(text: &str) -> Result<RegistryLogin, String> {
        let bad = || {
            format!(
                "docker registry login {:?} must be REGISTRY=USER:PASSWORD_FILE (an absolute path)",
                crate::protocol::bounded::bounded(text)
            )
        };
        let (registry, login) = text.split_once('=').ok_or_else(bad)?;
        let (username, file) = login.split_once(':').ok_or_else(bad)?;
        let password_file = PathBuf::from(file);
        if registry.is_empty() || username.is_empty() || !password_file.is_absolute() {
            return Err(bad());
        }
        Ok(RegistryLogin {
            registry: registry_of_key(registry).to_owned(),
            username: username.to_owned(),
            password_file,
        })
    }

    /// Its credentials, the password read now.
    fn credentials(&self) -> Option<DockerCredentials> {
        let password = match std::fs::read_to_string(&self.password_file) {
            Ok(password) => password.trim_end_matches(['\r', '\n']).to_owned(),
            Err(e) => {
                tracing::warn!(registry = %self.registry, file = %self.password_file.display(), error = %e, "cannot read a registry password");
                return None;
            }
        };
        Some(DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(password),
            serveraddress: Some(self.registry.clone()),
            ..DockerCredentials::default()
        })
    }
}

/// Where pulls find registry credentials.
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// The worker's own logins, which come first.
    pub logins: Vec<RegistryLogin>,
    /// A Docker `config.json`.
    pub auth_file: Option<PathBuf>,
}

impl CredentialSources {
    /// The credentials for pulling `image`, if any source has some.
    pub fn for_image(&self, image: &str) -> Option<DockerCredentials> {
        let registry = registry_of(image);
        if let Some(login) = self.logins.iter().find(|l| l.registry == registry) {
            return login.credentials();
        }
        from_auth_file(self.auth_file.as_deref()?, image)
    }
}

/// Where Docker's own client keeps its `config.json`: `$DOCKER_CONFIG`, else
/// `~/.docker`.
pub fn default_auth_file() -> Option<PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
    Some(dir.join("config.json"))
}

/// The registry `image` is pulled from: its first path component when that
/// names a host (a dot, a port or `localhost`), else Docker Hub.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => DOCKER_HUB,
    }
}

/// A key of `auths` as a bare registry host (`https://index.docker.io/v1/` is
/// Docker Hub).
fn registry_of_key(key: &str) -> &str {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        host => host,
    }
}

/// The credentials `file` holds for the registry of `image`, if any. A file
/// that is missing or unreadable gives none (and says why in the log).
fn from_auth_file(file: &Path, image: &str) -> Option<DockerCredentials> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read registry credentials");
            return None;
        }
    };
    let config: ConfigFile = match serde_json::from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "registry credentials file is not valid");
            return None;
        }
    };
    let registry = registry_of(image);
    let (key, entry) = config
        .auths
        .iter()
        .find(|(key, _)| registry_of_key(key) == registry)?;
    let (username, password) = match &entry.auth {
        Some(auth) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                tracing::warn!(file = %file.display(), registry, "registry credentials: auth is not base64 USER:PASSWORD");
                return None;
            };
            (Some(user.to_owned()), Some(password.to_owned()))
        }
        None => (entry.username.clone(), entry.password.clone()),
    };
    Some(DockerCredentials {
        username,
        password,
        identitytoken: entry.identitytoken.clone(),
        serveraddress: Some(key.clone()),
        ..DockerCredentials::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_name_their_registry_or_docker_hub() {
        assert_eq!(registry_of("busybox:1"), DOCKER_HUB);
        assert_eq!(registry_of("library/busybox"), DOCKER_HUB);
        assert_eq!(registry_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("registry.example.org/a"),
            "registry.example.org"
        );
        assert_eq!(registry_of("localhost/a"), "localhost");
        assert_eq!(registry_of_key("https://index.docker.io/v1/"), DOCKER_HUB);
        assert_eq!(registry_of_key("https://127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn credentials_come_from_auth_or_username_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("flare:s3cret");
        std::fs::write(
            &file,
            format!(
                r#"{{"auths": {{
                    "127.0.0.1:5000": {{"auth": "{auth}"}},
                    "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}}
                }}, "credsStore": "desktop"}}"#
            ),
        )
        .unwrap();
        let local = from_auth_file(&file, "127.0.0.1:5000/a:1").unwrap();
        assert_eq!(
            (local.username.as_deref(), local.password.as_deref()),
            (Some("flare"), Some("s3cret"))
        );
        assert_eq!(local.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        let hub = from_auth_file(&file, "busybox").unwrap();
        assert_eq!(hub.username.as_deref(), Some("hub"));
        assert!(from_auth_file(&file, "other.example.org/a").is_none());
        assert!(from_auth_file(&dir.path().join("missing.json"), "busybox").is_none());
    }

    #[test]
    fn the_workers_logins_come_before_the_auth_file() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "from-file\n").unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(
            &file,
            r#"{"auths": {"127.0.0.1:5000": {"username": "a", "password": "b"}, "other:1": {"username": "c", "password": "d"}}}"#,
        )
        .unwrap();
        let login = format!("https://127.0.0.1:5000=flare:{}", password.display());
        let sources = CredentialSources {
            logins: vec![RegistryLogin::parse(&login).unwrap()],
            auth_file: Some(file),
        };
        let local = sources.for_image("127.0.0.1:5000/a:1").unwrap();
        assert_eq!(
            (local.username.as_deref(), local.password.as_deref()),
            (Some("flare"), Some("from-file"))
        );
        assert_eq!(
            sources.for_image("other:1/a").unwrap().username.as_deref(),
            Some("c")
        );
        for bad in ["r=u", "=u:/p", "r=:/p", "r=u:relative", "nothing"] {
            assert!(RegistryLogin::parse(bad).is_err(), "{bad}");
        }
    }
}
