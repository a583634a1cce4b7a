//! Every failed connection says why and what to check, in the error and on the
//! command line (`flare-launcher status x`): each case against a real nats-server
//! configured for it, most of them one that wants TLS, a client certificate and a
//! password. A worker logs the cause while it waits for a server, and stops at once
//! when waiting cannot help.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use flare_launcher::nats::connect::{
    AuthMethod, Cause, ConnectError, NatsArgs, TlsFileProblem, connect,
};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::args;
use super::pki::{make_certificates, tls_block, user_nkey_pair};
use crate::common::nats_server::NatsServer;

/// Generous bound for anything that should happen at once, on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(30);

/// A server that wants TLS, a client certificate signed by its CA and alice's
/// password, with the certificates made for it.
struct StrictServer {
    pki: TempDir,
    server: NatsServer,
}

impl StrictServer {
    fn start() -> StrictServer {
        let pki = TempDir::new().unwrap();
        make_certificates(pki.path());
        let server = NatsServer::start_with_config(&format!(
            "{}\nauthorization {{ users = [ {{ user: alice, password: \"pw-1\" }} ] }}",
            tls_block(pki.path(), true)
        ));
        StrictServer { pki, server }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.pki.path().join(name)
    }

    /// Settings the server accepts.
    fn accepted(&self) -> NatsArgs {
        NatsArgs {
            tls_ca: Some(self.file("ca.pem")),
            tls_cert: Some(self.file("client.pem")),
            tls_key: Some(self.file("client.key")),
            user: Some("alice".into()),
            password: Some("pw-1".into()),
            // Room for TLS handshakes on a loaded machine.
            connect_timeout_s: Some(10),
            ..args(&format!("tls://127.0.0.1:{}", self.server.port()))
        }
    }
}

/// The command-line flags that say what `settings` say.
fn flags(settings: &NatsArgs) -> Vec<String> {
    let NatsArgs {
        url,
        user,
        password,
        token,
        nkey_seed_file,
        credentials_file,
        tls_ca,
        tls_cert,
        tls_key,
        tls_required,
        connect_timeout_s,
        inbox_prefix,
    } = settings;
    let path = |file: &Option<PathBuf>| file.as_ref().map(|f| f.display().to_string());
    [
        ("--nats-url", url.clone()),
        ("--nats-user", user.clone()),
        ("--nats-password", password.clone()),
        ("--nats-token", token.clone()),
        ("--nats-nkey-seed-file", path(nkey_seed_file)),
        ("--nats-credentials-file", path(credentials_file)),
        ("--nats-tls-ca", path(tls_ca)),
        ("--nats-tls-cert", path(tls_cert)),
        ("--nats-tls-key", path(tls_key)),
        (
            "--nats-connect-timeout-s",
            connect_timeout_s.map(|s| s.to_string()),
        ),
        ("--nats-inbox-prefix", inbox_prefix.clone()),
    ]
    .into_iter()
    .filter_map(|(flag, value)| Some([flag.to_owned(), value?]))
    .flatten()
    .chain(tls_required.map(|on| format!("--nats-tls-required={on}")))
    .collect()
}

/// The `flare-launcher` binary with `arguments`, its output captured.
fn binary<I, S>(arguments: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_flare-launcher"));
    command
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `flare-launcher status x` with `settings`; checks it fails (status 2) and
/// returns what it printed.
async fn cli_failure(settings: &NatsArgs) -> String {
    let output = binary(
        ["status", "x"]
            .map(String::from)
            .into_iter()
            .chain(flags(settings)),
    )
    .output()
    .await
    .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    stderr
}

/// Connects with `settings`, expecting a failure that says `expected`, both from the
/// library and on the command line; returns the library's error.
async fn fails_saying(settings: &NatsArgs, expected: &str) -> ConnectError {
    let error = connect(settings, "test", false)
        .await
        .expect_err("the connection fails");
    let message = error.to_string();
    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    let printed = cli_failure(settings).await;
    assert!(
        printed.contains(&format!("flare-launcher: {message}")),
        "the CLI prints the error: {printed}"
    );
    error
}

#[tokio::test]
async fn a_v1_client_certificate_is_named_with_the_fix() {
    let strict = StrictServer::start();
    connect(&strict.accepted(), "test", false)
        .await
        .expect("the v3 certificate is accepted");

    let v1 = NatsArgs {
        tls_cert: Some(strict.file("client-v1.pem")),
        tls_key: Some(strict.file("client-v1.key")),
        ..strict.accepted()
    };
    let error = fails_saying(
        &v1,
        "X.509 v1 certificate, which is not accepted: add extensions (basicConstraints, \
         keyUsage, extendedKeyUsage=clientAuth, subjectAltName), e.g. with \
         `openssl x509 -req -extfile`",
    )
    .await;
    assert!(
        matches!(
            error,
            ConnectError::UnusableTlsFile {
                flag: "--nats-tls-cert",
                problem: TlsFileProblem::CertificateV1,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("client-v1.pem"), "{error}");
}

#[tokio::test]
async fn a_key_of_another_certificate_is_named() {
    let strict = StrictServer::start();
    let mismatched = NatsArgs {
        tls_key: Some(strict.file("stranger.key")),
        ..strict.accepted()
    };
    let error = fails_saying(
        &mismatched,
        "not the private key of the certificate in --nats-tls-cert",
    )
    .await;
    assert!(
        matches!(
            error,
            ConnectError::UnusableTlsFile {
                flag: "--nats-tls-key",
                problem: TlsFileProblem::KeyMismatch { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_password_is_an_authorization_violation() {
    let strict = StrictServer::start();
    let wrong = NatsArgs {
        password: Some("pw-2".into()),
        ..strict.accepted()
    };
    let error = fails_saying(
        &wrong,
        "authorization violation: the server refused the credentials; check \
         --nats-user/--nats-password",
    )
    .await;
    assert_eq!(
        error.cause(),
        Some(&Cause::AuthorizationViolation {
            method: Some(AuthMethod::UserPassword)
        })
    );
    assert!(!format!("{error:?}").contains("pw-2"));

    let none = NatsArgs {
        user: None,
        password: None,
        ..strict.accepted()
    };
    let error = fails_saying(
        &none,
        "authorization violation: the server wants credentials: give \
         --nats-user/--nats-password, --nats-token",
    )
    .await;
    assert_eq!(
        error.cause(),
        Some(&Cause::AuthorizationViolation { method: None })
    );
}

#[tokio::test]
async fn a_missing_client_certificate_is_asked_for() {
    let strict = StrictServer::start();
    let without = NatsArgs {
        tls_cert: None,
        tls_key: None,
        ..strict.accepted()
    };
    let error = fails_saying(
        &without,
        "the server requires a client certificate (--nats-tls-cert/--nats-tls-key)",
    )
    .await;
    assert_eq!(error.cause(), Some(&Cause::ClientCertificateRequired));
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused_by_name() {
    let strict = StrictServer::start();
    let stranger = NatsArgs {
        tls_cert: Some(strict.file("stranger.pem")),
        tls_key: Some(strict.file("stranger.key")),
        ..strict.accepted()
    };
    let error = fails_saying(
        &stranger,
        "the server refused the client certificate in --nats-tls-cert",
    )
    .await;
    assert_eq!(
        error.cause(),
        Some(&Cause::ClientCertificateRejected {
            cert: strict.file("stranger.pem")
        })
    );
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_server_is_named_and_not_waited_on() {
    let strict = StrictServer::start();
    let other_ca = NatsArgs {
        tls_ca: Some(strict.file("other-ca.pem")),
        ..strict.accepted()
    };
    let error = fails_saying(
        &other_ca,
        "the server's certificate is not signed by the CA in --nats-tls-ca",
    )
    .await;
    assert_eq!(
        error.cause(),
        Some(&Cause::UnknownIssuer {
            ca: Some(strict.file("other-ca.pem"))
        })
    );

    // A worker waits for servers that are not there yet, never for a certificate.
    let waited = tokio::time::timeout(PROMPTLY, connect(&other_ca, "test", true))
        .await
        .expect("a certificate refusal is not retried");
    assert!(matches!(
        waited.unwrap_err().cause(),
        Some(Cause::UnknownIssuer { .. })
    ));

    let system_cas = NatsArgs {
        tls_ca: None,
        ..strict.accepted()
    };
    fails_saying(
        &system_cas,
        "the server's certificate is not signed by a CA this host trusts: name its CA \
         with --nats-tls-ca",
    )
    .await;
}

#[tokio::test]
async fn tls_against_a_plain_server_says_it_does_not_speak_tls() {
    let server = NatsServer::start_with_config("");
    let tls = NatsArgs {
        tls_required: Some(true),
        ..args(&server.url())
    };
    let error = fails_saying(&tls, "the server does not speak TLS there").await;
    assert_eq!(error.cause(), Some(&Cause::NotTls));
}

#[tokio::test]
async fn a_stopped_server_refuses() {
    let mut server = NatsServer::start_with_config("");
    server.stop();
    let error = fails_saying(
        &args(&server.url()),
        "connection refused (is nats-server running at that address?)",
    )
    .await;
    assert_eq!(error.cause(), Some(&Cause::Refused));
    assert!(error.to_string().contains(&server.url()), "{error}");
}

#[tokio::test]
async fn a_server_that_never_greets_times_out_after_the_limit() {
    // This server waits for a TLS handshake before it greets (handshake_first) far
    // longer than the client waits for the greeting of plain NATS.
    let pki = TempDir::new().unwrap();
    make_certificates(pki.path());
    let file = |name: &str| pki.path().join(name).display().to_string();
    let server = NatsServer::start_with_config(&format!(
        "tls {{\n cert_file: \"{}\"\n key_file: \"{}\"\n handshake_first: true\n timeout: 60\n}}",
        file("server.pem"),
        file("server.key"),
    ));
    let silent = NatsArgs {
        connect_timeout_s: Some(1),
        ..args(&server.url())
    };
    let error = fails_saying(&silent, "timed out after 1 s without a NATS handshake").await;
    assert_eq!(error.cause(), Some(&Cause::TimedOut { after_s: 1 }));
}

#[tokio::test]
async fn refused_token_nkey_and_credentials_name_their_flags() {
    let keys = TempDir::new().unwrap();
    let (seed, _unknown_to_the_server) = user_nkey_pair(keys.path());
    let server = NatsServer::start_with_config(
        "authorization { users = [ { user: alice, password: \"pw-1\" } ] }",
    );
    let seed_file = keys.path().join("user.nk");
    std::fs::write(&seed_file, &seed).unwrap();
    // The user JWT is not checked on this side; the server sees it is no good.
    let credentials_file = keys.path().join("user.creds");
    std::fs::write(
        &credentials_file,
        format!(
            "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.e30.c2ln\n\
             ------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n\
             ------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    let cases = [
        (
            NatsArgs {
                token: Some("t0ken".into()),
                ..args(&server.url())
            },
            AuthMethod::Token,
        ),
        (
            NatsArgs {
                nkey_seed_file: Some(seed_file),
                ..args(&server.url())
            },
            AuthMethod::NkeySeed,
        ),
        (
            NatsArgs {
                credentials_file: Some(credentials_file),
                ..args(&server.url())
            },
            AuthMethod::Credentials,
        ),
    ];
    for (settings, method) in cases {
        let expected = format!(
            "authorization violation: the server refused the credentials; check {}",
            method.flags()
        );
        let error = fails_saying(&settings, &expected).await;
        assert_eq!(
            error.cause(),
            Some(&Cause::AuthorizationViolation {
                method: Some(method)
            })
        );
    }
}

#[tokio::test]
async fn unusable_files_are_named_with_the_reason_before_connecting() {
    let dir = TempDir::new().unwrap();
    let url = "nats://127.0.0.1:1";

    // A CA file that holds only a key.
    let (seed, _) = user_nkey_pair(dir.path());
    let no_certificate = NatsArgs {
        tls_ca: Some(dir.path().join("nkey.pem")),
        ..args(url)
    };
    let error = fails_saying(&no_certificate, "no PEM certificate in it").await;
    assert!(matches!(
        error,
        ConnectError::UnusableTlsFile {
            flag: "--nats-tls-ca",
            problem: TlsFileProblem::NoCertificate,
            ..
        }
    ));

    // A seed with a broken checksum; the error never quotes it.
    let mut broken = seed.clone();
    let changed = if &seed[10..11] == "A" { "B" } else { "A" };
    broken.replace_range(10..11, changed);
    let seed_file = dir.path().join("broken.nk");
    std::fs::write(&seed_file, &broken).unwrap();
    let bad_seed = NatsArgs {
        nkey_seed_file: Some(seed_file),
        ..args(url)
    };
    let error = fails_saying(&bad_seed, "does not hold a valid user nkey seed").await;
    assert!(matches!(error, ConnectError::InvalidNkeySeed { .. }));
    let printed = cli_failure(&bad_seed).await;
    assert!(!printed.contains(&broken[4..]), "{printed}");

    // The command line prints the causes too: here, the file system's answer and
    // the credentials parser's.
    let absent = NatsArgs {
        tls_ca: Some(dir.path().join("absent.pem")),
        ..args(url)
    };
    let printed = cli_failure(&absent).await;
    assert!(
        printed.contains("cannot read --nats-tls-ca file") && printed.contains("No such file"),
        "{printed}"
    );
    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "not a credentials file").unwrap();
    let printed = cli_failure(&NatsArgs {
        credentials_file: Some(garbage),
        ..args(url)
    })
    .await;
    assert!(
        printed.contains("cannot read NATS credentials file")
            && printed.contains("cannot parse user JWT"),
        "{printed}"
    );
}

/// Reads `worker`'s stderr until a line holds `expected`; returns that line.
async fn log_line_with(worker: &mut tokio::process::Child, expected: &str) -> String {
    let mut lines = BufReader::new(worker.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    tokio::time::timeout(PROMPTLY, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(expected) {
                return line;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        panic!("the worker ended without logging {expected:?}:\n{seen}");
    })
    .await
    .unwrap_or_else(|_| panic!("no log line with {expected:?} in time"))
}

#[tokio::test]
async fn a_worker_logs_the_cause_while_it_waits_and_stops_when_waiting_cannot_help() {
    let data = TempDir::new().unwrap();
    let data_dir = |name: &str| data.path().join(name).display().to_string();

    let mut down = NatsServer::start_with_config("");
    down.stop();
    let mut waiting = binary([
        "worker",
        "--nats-url",
        &down.url(),
        "--data-dir",
        &data_dir("waiting"),
    ])
    .spawn()
    .unwrap();
    let line = log_line_with(&mut waiting, "not reachable yet, retrying").await;
    assert!(
        line.contains("connection refused (is nats-server running at that address?)"),
        "{line}"
    );
    waiting.kill().await.unwrap();

    let strict = StrictServer::start();
    let other_ca = NatsArgs {
        tls_ca: Some(strict.file("other-ca.pem")),
        ..strict.accepted()
    };
    let stopping = binary(
        ["worker", "--data-dir", &data_dir("stopping")]
            .map(String::from)
            .into_iter()
            .chain(flags(&other_ca)),
    )
    .output();
    let output = tokio::time::timeout(PROMPTLY, stopping)
        .await
        .expect("the worker gives up at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the server's certificate is not signed by the CA in --nats-tls-ca"),
        "{stderr}"
    );
}
