//! `nats::connect` against real `nats-server` processes: every authentication method,
//! TLS with and without client certificates, several URLs, the settings checks and the
//! layering of `NatsArgs`. `causes` holds the failures and what they say;
//! `pki` makes the certificates and nkeys.

mod causes;
mod pki;

use std::path::PathBuf;
use std::time::Duration;

use crate::common::nats_server::NatsServer;
use async_nats::ConnectErrorKind;
use clap::Parser;
use flare_launcher::nats::connect::{ConnectError, NatsArgs, connect};
use futures::StreamExt;
use pki::{make_certificates, tls_block, user_nkey_pair};
use tempfile::TempDir;

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn args(url: &str) -> NatsArgs {
    NatsArgs {
        url: Some(url.to_owned()),
        connect_timeout_s: Some(2),
        ..NatsArgs::default()
    }
}

/// Proves the connection works both ways: a request answered by a second client.
async fn round_trip(client: &async_nats::Client, responder: &async_nats::Client) {
    let mut requests = responder.subscribe("test.echo").await.unwrap();
    // A flush only empties the write buffer; a server round trip on the
    // responder's connection proves the server has the subscription.
    responder.request("$JS.API.INFO", "".into()).await.ok();
    let answering = responder.clone();
    let task = tokio::spawn(async move {
        let request = requests.next().await.unwrap();
        let reply = request.reply.unwrap();
        answering.publish(reply, request.payload).await.unwrap();
        answering.flush().await.unwrap();
    });
    let response = client.request("test.echo", "ping".into()).await.unwrap();
    assert_eq!(&response.payload[..], b"ping");
    task.await.unwrap();
}

fn invalid_settings(result: Result<async_nats::Client, ConnectError>) -> String {
    match result {
        Err(ConnectError::InvalidSettings(message)) => message,
        other => panic!("expected InvalidSettings, got {other:?}"),
    }
}

#[tokio::test]
async fn token_auth_connects_and_round_trips() {
    let server = NatsServer::start_with_config("authorization { token: \"s3cret\" }");
    let good = NatsArgs {
        token: Some("s3cret".into()),
        ..args(&server.url())
    };
    let client = connect(&good, "test-client", false).await.unwrap();
    let responder = connect(&good, "test-responder", false).await.unwrap();
    round_trip(&client, &responder).await;
}

#[tokio::test]
async fn wrong_token_fails_fast_naming_the_url() {
    let server = NatsServer::start_with_config("authorization { token: \"s3cret\" }");
    let wrong = NatsArgs {
        token: Some("guess".into()),
        ..args(&server.url())
    };
    let error = connect(&wrong, "test", false).await.unwrap_err();
    assert_eq!(
        error.connect_kind(),
        Some(ConnectErrorKind::AuthorizationViolation)
    );
    assert!(error.to_string().contains(&server.url()), "{error}");
    assert!(!format!("{error:?}").contains("guess"));

    // Waiting for the server does not help against refused credentials.
    let waited = tokio::time::timeout(Duration::from_secs(2), connect(&wrong, "test", true))
        .await
        .expect("refused credentials are not retried");
    assert!(waited.is_err());
}

#[tokio::test]
async fn user_and_password_auth() {
    let server = NatsServer::start_with_config(
        "authorization { users = [ { user: alice, password: \"pw-1\" } ] }",
    );
    let good = NatsArgs {
        user: Some("alice".into()),
        password: Some("pw-1".into()),
        ..args(&server.url())
    };
    let client = connect(&good, "test", false).await.unwrap();
    round_trip(&client, &client).await;

    let wrong = NatsArgs {
        password: Some("pw-2".into()),
        ..good
    };
    let error = connect(&wrong, "test", false).await.unwrap_err();
    assert_eq!(
        error.connect_kind(),
        Some(ConnectErrorKind::AuthorizationViolation)
    );
}

#[tokio::test]
async fn nkey_seed_file_auth() {
    let keys = TempDir::new().unwrap();
    let (seed, public) = user_nkey_pair(keys.path());
    assert!(
        seed.starts_with("SU") && public.starts_with('U'),
        "{seed:.2} {public}"
    );
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users = [ {{ nkey: {public} }} ] }}"
    ));

    let seed_file = keys.path().join("user.nk");
    std::fs::write(&seed_file, format!("  {seed}\n\n")).unwrap();
    let with_seed = NatsArgs {
        nkey_seed_file: Some(seed_file),
        ..args(&server.url())
    };
    let client = connect(&with_seed, "test", false).await.unwrap();
    round_trip(&client, &client).await;

    // Without credentials the server refuses.
    let error = connect(&args(&server.url()), "test", false)
        .await
        .unwrap_err();
    assert_eq!(
        error.connect_kind(),
        Some(ConnectErrorKind::AuthorizationViolation)
    );
}

#[tokio::test]
async fn unreadable_or_wrong_seed_file() {
    let dir = TempDir::new().unwrap();
    let missing = NatsArgs {
        nkey_seed_file: Some(dir.path().join("absent.nk")),
        ..args("nats://127.0.0.1:1")
    };
    assert!(matches!(
        connect(&missing, "test", false).await,
        Err(ConnectError::ReadNkeySeed { .. })
    ));

    let not_a_seed = dir.path().join("public.nk");
    std::fs::write(&not_a_seed, "UABCDEF\n").unwrap();
    let wrong = NatsArgs {
        nkey_seed_file: Some(not_a_seed),
        ..args("nats://127.0.0.1:1")
    };
    let message = invalid_settings(connect(&wrong, "test", false).await);
    assert!(message.contains("SU"), "{message}");

    let missing_creds = NatsArgs {
        credentials_file: Some(dir.path().join("absent.creds")),
        ..args("nats://127.0.0.1:1")
    };
    assert!(matches!(
        connect(&missing_creds, "test", false).await,
        Err(ConnectError::ReadCredentials { .. })
    ));
}

#[tokio::test]
async fn tls_with_private_ca() {
    let pki = TempDir::new().unwrap();
    make_certificates(pki.path());
    let server = NatsServer::start_with_config(&tls_block(pki.path(), false));

    let trusted = NatsArgs {
        tls_ca: Some(pki.path().join("ca.pem")),
        tls_required: Some(true),
        ..args(&server.url())
    };
    let client = connect(&trusted, "test", false).await.unwrap();
    round_trip(&client, &client).await;

    // A tls:// URL alone turns TLS on; without the CA the certificate is not trusted.
    let untrusted = args(&format!("tls://127.0.0.1:{}", server.port()));
    let error = connect(&untrusted, "test", false).await.unwrap_err();
    assert!(matches!(error, ConnectError::Connect { .. }), "{error:?}");
}

#[tokio::test]
async fn mutual_tls_with_client_certificate() {
    let pki = TempDir::new().unwrap();
    make_certificates(pki.path());
    let server = NatsServer::start_with_config(&tls_block(pki.path(), true));

    let with_cert = NatsArgs {
        tls_ca: Some(pki.path().join("ca.pem")),
        tls_cert: Some(pki.path().join("client.pem")),
        tls_key: Some(pki.path().join("client.key")),
        ..args(&server.url())
    };
    let client = connect(&with_cert, "test", false).await.unwrap();
    round_trip(&client, &client).await;

    let without_cert = NatsArgs {
        tls_cert: None,
        tls_key: None,
        ..with_cert.clone()
    };
    assert!(connect(&without_cert, "test", false).await.is_err());

    let absent_key = NatsArgs {
        tls_key: Some(pki.path().join("absent.key")),
        ..with_cert
    };
    assert!(matches!(
        connect(&absent_key, "test", false).await,
        Err(ConnectError::ReadTlsFile {
            flag: "--nats-tls-key",
            ..
        })
    ));
}

#[tokio::test]
async fn dead_first_url_falls_over_to_live_second() {
    let server = NatsServer::start_with_config("");
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let both = args(&format!("{dead} , {}", server.url()));
    let client = connect(&both, "test", false).await.unwrap();
    assert_eq!(client.server_info().port, server.port());
    round_trip(&client, &client).await;
}

#[tokio::test]
async fn unreachable_server_fails_fast_without_waiting() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let error = connect(&args(&url), "test", false).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(error.to_string().contains(&url), "{error}");
    assert!(matches!(error, ConnectError::Connect { .. }));
}

#[tokio::test]
async fn waits_for_a_server_that_starts_later() {
    // A server that is down now and comes back on the same port.
    let mut server = NatsServer::start_with_config("authorization { token: \"t\" }");
    server.stop();
    let waiting = NatsArgs {
        token: Some("t".into()),
        ..args(&server.url())
    };
    let connecting = tokio::spawn(async move { connect(&waiting, "test", true).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!connecting.is_finished());
    server.restart();
    let client = tokio::time::timeout(Duration::from_secs(2), connecting)
        .await
        .expect("connected soon after the server started")
        .unwrap()
        .unwrap();
    assert_eq!(client.server_info().port, server.port());
    round_trip(&client, &client).await;
}

#[tokio::test]
async fn contradictory_settings_are_refused_before_connecting() {
    let base = args("nats://127.0.0.1:1");
    let cases = [
        (
            NatsArgs {
                user: Some("u".into()),
                ..base.clone()
            },
            "--nats-user needs --nats-password (FLARE_NATS_PASSWORD)",
        ),
        (
            NatsArgs {
                password: Some("p".into()),
                ..base.clone()
            },
            "--nats-password needs --nats-user",
        ),
        (
            NatsArgs {
                user: Some("u".into()),
                password: Some("p".into()),
                token: Some("t".into()),
                ..base.clone()
            },
            "--nats-user/--nats-password and --nats-token",
        ),
        (
            NatsArgs {
                token: Some("t".into()),
                credentials_file: Some("x.creds".into()),
                ..base.clone()
            },
            "--nats-token and --nats-credentials-file",
        ),
        (
            NatsArgs {
                tls_cert: Some("c.pem".into()),
                ..base.clone()
            },
            "--nats-tls-cert and --nats-tls-key go together",
        ),
        (
            NatsArgs {
                tls_key: Some("k.pem".into()),
                ..base.clone()
            },
            "--nats-tls-cert and --nats-tls-key go together",
        ),
        (
            NatsArgs {
                connect_timeout_s: Some(0),
                ..base.clone()
            },
            "--nats-connect-timeout-s",
        ),
        (
            NatsArgs {
                url: Some(" , ".into()),
                ..base.clone()
            },
            "no server URL",
        ),
    ];
    for (settings, expected) in cases {
        let message = invalid_settings(connect(&settings, "test", false).await);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }

    let bad_url = NatsArgs {
        url: Some("http://user:hunter2@host".into()),
        ..base
    };
    match connect(&bad_url, "test", false).await {
        Err(ConnectError::InvalidUrl { url, .. }) => assert_eq!(url, "http://***@host"),
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
}

#[test]
fn or_prefers_self_field_by_field() {
    let flags = NatsArgs {
        url: Some("nats://flag:4222".into()),
        password: Some("from-env".into()),
        ..NatsArgs::default()
    };
    let file = NatsArgs {
        url: Some("nats://file:4222".into()),
        user: Some("alice".into()),
        password: Some("from-file".into()),
        tls_required: Some(false),
        connect_timeout_s: Some(9),
        ..NatsArgs::default()
    };
    let merged = flags.clone().or(file.clone());
    assert_eq!(
        merged,
        NatsArgs {
            url: Some("nats://flag:4222".into()),
            user: Some("alice".into()),
            password: Some("from-env".into()),
            tls_required: Some(false),
            connect_timeout_s: Some(9),
            ..NatsArgs::default()
        }
    );
    assert_eq!(NatsArgs::default().or(file.clone()), file);
    assert_eq!(flags.clone().or(NatsArgs::default()), flags);
}

#[test]
fn urls_split_trim_and_default() {
    assert_eq!(NatsArgs::default().urls(), ["nats://127.0.0.1:4222"]);
    let several = NatsArgs {
        url: Some(" nats://a:4222,tls://b:4443 ,, c ,".into()),
        ..NatsArgs::default()
    };
    assert_eq!(several.urls(), ["nats://a:4222", "tls://b:4443", "c"]);
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    nats: NatsArgs,
}

#[test]
fn command_line_flags() {
    let cli = Cli::try_parse_from([
        "flare-launcher",
        "--nats-url",
        "nats://a,nats://b",
        "--nats-user",
        "alice",
        "--nats-password",
        "pw",
        "--nats-tls-required",
        "--nats-connect-timeout-s",
        "3",
    ])
    .unwrap();
    assert_eq!(cli.nats.urls(), ["nats://a", "nats://b"]);
    assert_eq!(cli.nats.user.as_deref(), Some("alice"));
    assert_eq!(cli.nats.tls_required, Some(true));
    assert_eq!(cli.nats.connect_timeout_s, Some(3));

    let off = Cli::try_parse_from(["flare-launcher", "--nats-tls-required=false"]).unwrap();
    assert_eq!(off.nats.tls_required, Some(false));
}

#[test]
fn config_file_table() {
    let mut nats: toml::Table = toml::from_str(
        "url = \"nats://a:4222\"\ntoken = \"t\"\ntls_ca = \"/etc/ca.pem\"\ntls_required = true\nconnect_timeout_s = 7\n",
    )
    .unwrap();
    let table = NatsArgs::take_from(&mut nats).unwrap();
    assert!(nats.is_empty(), "every key is an option");
    assert_eq!(table.tls_ca, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(table.tls_required, Some(true));
    assert_eq!(table.connect_timeout_s, Some(7));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "[nats]\nnats_url = \"x\"\n").unwrap();
    let global = flare_launcher::config::GlobalArgs {
        config: Some(file),
        ..Default::default()
    };
    let unknown = flare_launcher::config::Settings::load(global, Default::default()).unwrap_err();
    assert!(unknown.to_string().contains("nats_url"), "{unknown}");
}
