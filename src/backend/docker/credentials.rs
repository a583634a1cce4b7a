//! Registry credentials for pulls, looked up by the registry an image names:
//! first the worker's own logins (`--docker-registry-login
//! REGISTRY=USER:PASSWORD_FILE`), then a Docker `config.json` (its `auths` table:
//! `auth` as base64 `USER:PASSWORD`, or `username` and `password`, or an
//! `identitytoken`), or the credential helper that file names for the registry
//! (`credHelpers`, else `credsStore`: as with Docker's own client, a helper
//! named there is the only source for its registries). Files are read at each
//! pull, so renewed credentials count without a restart.

use super::credential_helper::{self, HelperError};
use crate::config::docker::{DOCKER_HUB, RegistryLogin, registry_host as registry_of_key};
use crate::report::error_chain;
use base64::Engine;
use bollard::auth::DockerCredentials;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The server address under which Docker's tools keep Docker Hub's credentials.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    /// The helper for every registry without one of its own.
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    /// A helper per registry.
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl RegistryLogin {
    /// Its credentials, the password read now.
    fn credentials(&self) -> Option<DockerCredentials> {
        let password = match std::fs::read_to_string(&self.password_file) {
            Ok(password) => password.trim_end_matches(['\r', '\n']).to_owned(),
            Err(e) => {
                tracing::warn!(registry = %self.registry, file = %self.password_file.display(), error = %error_chain(&e), "cannot read a registry password");
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
    ///
    /// # Errors
    /// The credential helper named for the image's registry failed.
    pub async fn for_image(&self, image: &str) -> Result<Option<DockerCredentials>, HelperError> {
        let registry = registry_of(image);
        if let Some(login) = self.logins.iter().find(|l| l.registry == registry) {
            return Ok(login.credentials());
        }
        let Some(config) = self.auth_file.as_deref().and_then(read_config_file) else {
            return Ok(None);
        };
        match helper_for(&config, registry) {
            Some(helper) => {
                let server = if registry == DOCKER_HUB {
                    DOCKER_HUB_SERVER
                } else {
                    registry
                };
                credential_helper::get(
                    credential_helper::program(helper)?,
                    server,
                    credential_helper::TIME_LIMIT,
                )
                .await
            }
            None => Ok(from_auths(&config, registry)),
        }
    }
}

/// The credential helper `config` names for `registry`: its own, else the
/// store of every registry.
fn helper_for<'a>(config: &'a ConfigFile, registry: &str) -> Option<&'a str> {
    config
        .cred_helpers
        .iter()
        .find(|(key, _)| registry_of_key(key) == registry)
        .map(|(_, helper)| helper.as_str())
        .or(config.creds_store.as_deref())
        .filter(|helper| !helper.is_empty())
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

/// The Docker configuration in `file`, if it can be read. A file that is
/// missing or unreadable gives none (and says why in the log).
fn read_config_file(file: &Path) -> Option<ConfigFile> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %error_chain(&e), "cannot read registry credentials");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(config) => Some(config),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %error_chain(&e), "registry credentials file is not valid");
            None
        }
    }
}

/// The credentials the `auths` table of `config` holds for `registry`, if any.
fn from_auths(config: &ConfigFile, registry: &str) -> Option<DockerCredentials> {
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
                tracing::warn!(
                    registry,
                    "registry credentials: auth is not base64 USER:PASSWORD"
                );
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

    /// The sources of a worker with no logins of its own and `config` as its
    /// Docker `config.json` (in `dir`).
    fn auth_file_only(dir: &tempfile::TempDir, config: &str) -> CredentialSources {
        let file = dir.path().join("config.json");
        std::fs::write(&file, config).unwrap();
        CredentialSources {
            logins: Vec::new(),
            auth_file: Some(file),
        }
    }

    #[tokio::test]
    async fn credentials_come_from_auth_or_username_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("flare:s3cret");
        let sources = auth_file_only(
            &dir,
            &format!(
                r#"{{"auths": {{
                    "127.0.0.1:5000": {{"auth": "{auth}"}},
                    "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}}
                }}}}"#
            ),
        );
        let local = sources
            .for_image("127.0.0.1:5000/a:1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (local.username.as_deref(), local.password.as_deref()),
            (Some("flare"), Some("s3cret"))
        );
        assert_eq!(local.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        let hub = sources.for_image("busybox").await.unwrap().unwrap();
        assert_eq!(hub.username.as_deref(), Some("hub"));
        assert!(
            sources
                .for_image("other.example.org/a")
                .await
                .unwrap()
                .is_none()
        );
        let missing = CredentialSources {
            logins: Vec::new(),
            auth_file: Some(dir.path().join("missing.json")),
        };
        assert!(missing.for_image("busybox").await.unwrap().is_none());
    }

    #[test]
    fn a_registrys_own_helper_comes_before_the_store_of_every_registry() {
        let config: ConfigFile = serde_json::from_str(
            r#"{"auths": {"127.0.0.1:5000": {"auth": "eDp5"}},
                "credsStore": "desktop",
                "credHelpers": {"https://gcr.example.org": "gcloud", "empty.example.org": ""}}"#,
        )
        .unwrap();
        assert_eq!(helper_for(&config, "gcr.example.org"), Some("gcloud"));
        // As with Docker's own client, a store replaces the `auths` logins.
        assert_eq!(helper_for(&config, "127.0.0.1:5000"), Some("desktop"));
        assert_eq!(helper_for(&config, DOCKER_HUB), Some("desktop"));
        assert_eq!(helper_for(&config, "empty.example.org"), None);
        let no_store: ConfigFile =
            serde_json::from_str(r#"{"credHelpers": {"gcr.example.org": "gcloud"}}"#).unwrap();
        assert_eq!(helper_for(&no_store, "127.0.0.1:5000"), None);
    }

    #[tokio::test]
    async fn a_helper_that_cannot_be_named_is_an_error_not_an_anonymous_pull() {
        let dir = tempfile::tempdir().unwrap();
        let sources = auth_file_only(&dir, r#"{"credsStore": "../../bin/evil"}"#);
        let refused = sources.for_image("busybox").await.unwrap_err();
        assert!(matches!(refused, HelperError::BadName(_)), "{refused:?}");
    }

    #[tokio::test]
    async fn the_workers_logins_come_before_the_auth_file() {
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
            logins: vec![login.parse().unwrap()],
            auth_file: Some(file),
        };
        let local = sources
            .for_image("127.0.0.1:5000/a:1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (local.username.as_deref(), local.password.as_deref()),
            (Some("flare"), Some("from-file"))
        );
        let other = sources.for_image("other:1/a").await.unwrap().unwrap();
        assert_eq!(other.username.as_deref(), Some("c"));
    }
}
