//! Asking a Docker credential helper (`docker-credential-NAME`, found on the
//! worker's `PATH`, as Docker's own client finds it) for a registry's
//! credentials: `get` with the registry on standard input, a JSON answer on
//! standard output. The helper gets a time limit and its output a size limit;
//! "not found" is no credentials, anything else an error naming the helper.

use bollard::auth::DockerCredentials;
use serde::Deserialize;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How long a helper may take to answer (it may ask a keychain or a cloud).
pub const TIME_LIMIT: Duration = Duration::from_secs(15);

/// Most bytes read of a helper's answer or complaint.
const OUTPUT_LIMIT: u64 = 64 * 1024;

/// The user name with which a helper hands out an identity token.
const TOKEN_USER: &str = "<token>";

/// What every helper says, on standard output, when it has nothing for a registry.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// Why a helper gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The configuration names a helper no program could be called after.
    #[error("credential helper name {0} is not valid (letters, digits, '.', '_', '-')")]
    BadName(String),
    /// The helper could not be run.
    #[error("credential helper {program} cannot be run: {source}")]
    Spawn {
        /// The helper's program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The helper did not answer in time (it was killed).
    #[error("credential helper {program} did not answer within {limit:?}")]
    Timeout {
        /// The helper's program.
        program: String,
        /// The time it had.
        limit: Duration,
    },
    /// The helper failed, or answered something that is not credentials.
    #[error("credential helper {program} failed: {message}")]
    Failed {
        /// The helper's program.
        program: String,
        /// What it said (bounded).
        message: String,
    },
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The program of helper `name`: `docker-credential-NAME`.
///
/// # Errors
/// [`HelperError::BadName`] for a name that is empty or could name a path.
pub fn program(name: &str) -> Result<String, HelperError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(format!("docker-credential-{name}"))
    } else {
        Err(HelperError::BadName(crate::protocol::bounded::quoted(name)))
    }
}

/// Asks `program` for the credentials of `server` (a registry host, or
/// Docker Hub's `https://index.docker.io/v1/`), giving it `limit` to answer.
///
/// # Errors
/// A [`HelperError`]; a helper that has nothing for `server` is `Ok(None)`.
pub async fn get(
    program: impl Into<OsString>,
    server: &str,
    limit: Duration,
) -> Result<Option<DockerCredentials>, HelperError> {
    let program = program.into();
    let name = program.to_string_lossy().into_owned();
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HelperError::Spawn {
            program: name.clone(),
            source,
        })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        unreachable!("every stream of the helper is piped");
    };
    let exchange = async {
        // A helper that does not read its input still answers: ignore a broken pipe.
        let _ = stdin.write_all(server.as_bytes()).await;
        drop(stdin);
        let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
        (out, err, child.wait().await)
    };
    let (out, err, status) =
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| HelperError::Timeout {
                program: name.clone(),
                limit,
            })?;
    let failed = |message: &str| HelperError::Failed {
        program: name.clone(),
        message: crate::protocol::bounded::bounded(message.trim()),
    };
    let status = status.map_err(|e| failed(&e.to_string()))?;
    if !status.success() {
        if out.trim() == NOT_FOUND {
            return Ok(None);
        }
        // Only what it said on standard error: its standard output may hold a secret.
        return Err(failed(&format!("{status}: {err}")));
    }
    let answer: Answer = serde_json::from_str(&out)
        // Where the answer went wrong, not what it says: it may hold a secret.
        .map_err(|e| {
            failed(&format!(
                "its answer is not credentials ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
    let mut credentials = DockerCredentials {
        serveraddress: Some(server.to_owned()),
        ..DockerCredentials::default()
    };
    if answer.username == TOKEN_USER {
        credentials.identitytoken = Some(answer.secret);
    } else {
        credentials.username = Some(answer.username);
        credentials.password = Some(answer.secret);
    }
    Ok(Some(credentials))
}

/// At most [`OUTPUT_LIMIT`] bytes of `stream`, as text; the rest is drained
/// so that the helper never blocks on a full pipe.
async fn read_bounded(stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut limited = stream.take(OUTPUT_LIMIT);
    let _ = limited.read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut limited.into_inner(), &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A helper script running `body` (the server it is asked about in `$server`).
    fn helper(dir: &tempfile::TempDir, body: &str) -> PathBuf {
        let path = dir.path().join("docker-credential-test");
        std::fs::write(&path, format!("#!/bin/sh\nserver=$(cat)\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    async fn ask(body: &str, limit: Duration) -> Result<Option<DockerCredentials>, HelperError> {
        let dir = tempfile::tempdir().unwrap();
        get(helper(&dir, body), "127.0.0.1:5000", limit).await
    }

    #[tokio::test]
    async fn a_helper_answers_a_login_or_an_identity_token_for_the_server_asked() {
        let login = ask(
            r#"[ "$1" = get ] && printf '{"ServerURL":"%s","Username":"flare","Secret":"s3cret %s"}' "$server" "$server""#,
            TIME_LIMIT,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(login.username.as_deref(), Some("flare"));
        assert_eq!(login.password.as_deref(), Some("s3cret 127.0.0.1:5000"));
        assert_eq!(login.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        let token = ask(
            r#"echo '{"ServerURL":"x","Username":"<token>","Secret":"tok"}'"#,
            TIME_LIMIT,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(token.identitytoken.as_deref(), Some("tok"));
        assert_eq!(token.username, None);
    }

    #[tokio::test]
    async fn not_found_is_no_credentials_and_other_failures_are_errors() {
        let none = ask(&format!("echo '{NOT_FOUND}'; exit 1"), TIME_LIMIT).await;
        assert!(matches!(none, Ok(None)), "{none:?}");
        let failed = ask(
            r#"echo '{"Username":"u","Secret":"s3cret"}'; echo 'keychain locked' >&2; exit 3"#,
            TIME_LIMIT,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&failed, HelperError::Failed { message, .. }
                if message.contains("keychain locked") && !message.contains("s3cret")),
            "{failed:?}"
        );
        let garbage = ask("echo not json", TIME_LIMIT).await.unwrap_err();
        assert!(matches!(garbage, HelperError::Failed { .. }), "{garbage:?}");
        let missing = get("/nonexistent/docker-credential-x", "r", TIME_LIMIT)
            .await
            .unwrap_err();
        assert!(matches!(missing, HelperError::Spawn { .. }), "{missing:?}");
    }

    #[tokio::test]
    async fn a_helper_that_hangs_is_stopped_at_its_time_limit() {
        let hung = ask("sleep 30", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(hung, HelperError::Timeout { .. }), "{hung:?}");
    }

    #[tokio::test]
    async fn a_flood_of_output_is_cut_to_the_limit() {
        let failed = ask("yes complaint | head -c 10000000 >&2; exit 1", TIME_LIMIT)
            .await
            .unwrap_err();
        let HelperError::Failed { message, .. } = failed else {
            panic!("{failed:?}");
        };
        assert!(
            message.len() <= crate::protocol::bounded::MAX_TEXT,
            "{} bytes",
            message.len()
        );
    }

    #[test]
    fn only_plain_names_make_a_program() {
        assert_eq!(program("pass").unwrap(), "docker-credential-pass");
        assert_eq!(program("ecr-login").unwrap(), "docker-credential-ecr-login");
        for bad in ["", "../x", "a/b", "x y", "$(id)"] {
            assert!(program(bad).is_err(), "{bad:?}");
        }
    }
}
