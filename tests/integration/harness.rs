//! Checks of the nats-server test harness itself, using the raw NATS text protocol.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::nats_server::NatsServer;

/// A bare NATS protocol connection, enough to talk to the server without a client
/// library.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_sid: u32,
}

impl Raw {
    /// Connects and returns the connection together with the server's INFO line.
    fn connect(port: u16) -> (Raw, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let writer = stream.try_clone().expect("clone stream");
        let mut raw = Raw {
            reader: BufReader::new(stream),
            writer,
            next_sid: 1,
        };
        let info = raw.line();
        assert!(info.starts_with("INFO {"), "expected INFO, got {info:?}");
        (raw, info)
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        line.trim_end().to_owned()
    }

    /// Sends CONNECT (optionally with a token) and PING; returns the first reply
    /// line that is not `+OK`.
    fn handshake(&mut self, token: Option<&str>) -> String {
        let auth = token
            .map(|t| format!(",\"auth_token\":\"{t}\""))
            .unwrap_or_default();
        self.send(&format!("CONNECT {{\"verbose\":true{auth}}}\r\nPING\r\n"));
        loop {
            let line = self.line();
            if line != "+OK" {
                return line;
            }
        }
    }

    /// Request/reply over a fresh inbox; returns the reply payload.
    fn request(&mut self, subject: &str, payload: &str) -> String {
        let sid = self.next_sid;
        self.next_sid += 1;
        let inbox = format!("_INBOX.harness.{sid}");
        self.send(&format!(
            "SUB {inbox} {sid}\r\nPUB {subject} {inbox} {}\r\n{payload}\r\n",
            payload.len()
        ));
        loop {
            let line = self.line();
            if line.starts_with("MSG ") {
                let len: usize = line
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("MSG size");
                let mut body = vec![0; len + 2];
                self.reader.read_exact(&mut body).expect("MSG body");
                body.truncate(len);
                return String::from_utf8(body).expect("utf-8 payload");
            }
            assert!(
                line == "+OK" || line == "PONG" || line == "PING",
                "unexpected line {line:?}"
            );
        }
    }
}

#[test]
fn start_restart_keeps_port_and_jetstream_data() {
    let mut server = NatsServer::start();
    let port = server.port();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));

    let (mut conn, info) = Raw::connect(port);
    assert!(info.contains("\"jetstream\":true"), "{info}");
    assert_eq!(conn.handshake(None), "PONG");
    let created = conn.request(
        "$JS.API.STREAM.CREATE.HARNESS",
        r#"{"name":"HARNESS","subjects":["harness.>"],"storage":"file"}"#,
    );
    assert!(!created.contains("\"error\""), "{created}");
    let acked = conn.request("harness.one", "hello");
    assert!(acked.contains("\"stream\":\"HARNESS\""), "{acked}");
    drop(conn);
    assert!(server.store_dir().join("jetstream").is_dir());

    server.restart();
    assert_eq!(server.port(), port, "restart must keep the port");
    let (mut conn, _) = Raw::connect(port);
    assert_eq!(conn.handshake(None), "PONG");
    let info = conn.request("$JS.API.STREAM.INFO.HARNESS", "");
    assert!(info.contains("\"messages\":1"), "stream lost: {info}");
    drop(conn);

    // A crash (SIGKILL) followed by a restart behaves the same; stop is idempotent.
    server.kill();
    server.restart();
    assert_eq!(server.port(), port);
    let (mut conn, _) = Raw::connect(port);
    assert_eq!(conn.handshake(None), "PONG");
    drop(conn);
    server.stop();
    server.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn start_with_config_token_auth() {
    let server = NatsServer::start_with_config("authorization { token: \"s3cret\" }");

    let (mut conn, info) = Raw::connect(server.port());
    assert!(info.contains("\"auth_required\":true"), "{info}");
    assert_eq!(conn.handshake(None), "-ERR 'Authorization Violation'");

    let (mut conn, _) = Raw::connect(server.port());
    assert_eq!(conn.handshake(Some("s3cret")), "PONG");
}

#[test]
fn servers_in_parallel_get_distinct_ports() {
    let a = NatsServer::start();
    let b = NatsServer::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
}
