//! Why a connection attempt failed, in words a person can act on. The client library
//! sorts failures into coarse kinds (a TLS handshake refused for a certificate is an
//! "IO error"); the causes under it (the socket's error, the TLS library's verdict, the
//! server's `-ERR`) say more, and [`Cause::of`] reads them into a [`Cause`] that names
//! the setting to check.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

use async_nats::rustls::{self, AlertDescription, CertificateError, InvalidMessage};
use async_nats::{ConnectErrorKind, ServerError};

use super::{AuthMethod, NatsArgs};

/// Why a connection attempt failed. Its `Display` is the explanation with a hint.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// Nothing listens at the address.
    Refused,
    /// The host or its network cannot be reached.
    Unreachable,
    /// The host name does not resolve.
    HostNotFound,
    /// No NATS greeting and handshake within the connection timeout.
    TimedOut {
        /// The connection timeout in seconds.
        after_s: u64,
    },
    /// The other side closed or reset the connection during the handshake.
    Closed,
    /// The server answered the handshake with an error (other than an authorization
    /// violation), such as too many connections.
    ServerError,
    /// The server refused the credentials, or wanted some.
    AuthorizationViolation {
        /// The method that was used, if any.
        method: Option<AuthMethod>,
    },
    /// The nkey or credentials could not sign the server's challenge.
    SigningFailed,
    /// The server's certificate is not signed by a trusted CA.
    UnknownIssuer {
        /// The CA file given, if any (else the system's CAs were used).
        ca: Option<PathBuf>,
    },
    /// The server's certificate is not made out to the host of the URL.
    WrongHostName,
    /// The server's certificate has expired or is not valid yet.
    CertificateDates,
    /// The server's certificate is X.509 v1.
    ServerCertificateV1,
    /// The server's certificate is refused for another reason.
    BadServerCertificate,
    /// The server requires a client certificate and none was given.
    ClientCertificateRequired,
    /// The server refused the client certificate.
    ClientCertificateRejected {
        /// The client certificate file.
        cert: PathBuf,
    },
    /// TLS was required here, but the server does not speak TLS on that port.
    NotTls,
    /// The TLS handshake failed for another reason.
    Tls,
    /// Anything else: the client library's kind of failure.
    Other(ConnectErrorKind),
}

impl Cause {
    /// Reads the cause of `error`, the failure of an attempt made with `args`.
    pub fn of(error: &async_nats::ConnectError, args: &NatsArgs) -> Cause {
        match error.kind() {
            ConnectErrorKind::AuthorizationViolation => {
                return Cause::AuthorizationViolation {
                    method: args.auth_methods().first().copied(),
                };
            }
            ConnectErrorKind::Authentication => return Cause::SigningFailed,
            ConnectErrorKind::Dns => return Cause::HostNotFound,
            ConnectErrorKind::TimedOut => {
                return Cause::TimedOut {
                    after_s: args.connect_timeout().as_secs(),
                };
            }
            _ => {}
        }
        let mut next = error.source();
        while let Some(cause) = next {
            if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
                return Cause::of_tls(tls, args);
            }
            if let Some(io) = cause.downcast_ref::<io::Error>() {
                // A TLS failure travels as the inner error of an I/O error, which
                // `source()` skips.
                if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                    return Cause::of_tls(tls, args);
                }
                if let Some(cause) = Cause::of_io(io.kind()) {
                    return cause;
                }
            }
            if cause.downcast_ref::<ServerError>().is_some() {
                return Cause::ServerError;
            }
            next = cause.source();
        }
        match error.kind() {
            ConnectErrorKind::Tls => Cause::Tls,
            kind => Cause::Other(kind),
        }
    }

    /// Whether trying again can help: a server may come up or become reachable, but
    /// it will not start accepting credentials or a certificate it refused.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Cause::Refused
                | Cause::Unreachable
                | Cause::HostNotFound
                | Cause::TimedOut { .. }
                | Cause::Closed
                | Cause::ServerError
                | Cause::Other(ConnectErrorKind::Io)
        )
    }

    fn of_io(kind: io::ErrorKind) -> Option<Cause> {
        use io::ErrorKind::*;
        match kind {
            ConnectionRefused => Some(Cause::Refused),
            HostUnreachable | NetworkUnreachable | AddrNotAvailable => Some(Cause::Unreachable),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Some(Cause::Closed),
            _ => None,
        }
    }

    fn of_tls(error: &rustls::Error, args: &NatsArgs) -> Cause {
        match error {
            rustls::Error::InvalidCertificate(certificate) => match certificate {
                CertificateError::UnknownIssuer => Cause::UnknownIssuer {
                    ca: args.tls_ca.clone(),
                },
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Cause::WrongHostName,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Cause::CertificateDates,
                CertificateError::Other(other)
                    if other.0.downcast_ref::<webpki::Error>()
                        == Some(&webpki::Error::UnsupportedCertVersion) =>
                {
                    Cause::ServerCertificateV1
                }
                _ => Cause::BadServerCertificate,
            },
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                Cause::ClientCertificateRequired
            }
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA,
            ) => match &args.tls_cert {
                Some(cert) => Cause::ClientCertificateRejected { cert: cert.clone() },
                None => Cause::ClientCertificateRequired,
            },
            // The server's plain-text answer read as a TLS record.
            rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => Cause::NotTls,
            _ => Cause::Tls,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Refused => {
                f.write_str("connection refused (is nats-server running at that address?)")
            }
            Cause::Unreachable => f.write_str("host or network unreachable"),
            Cause::HostNotFound => f.write_str("the host name does not resolve"),
            Cause::TimedOut { after_s } => write!(
                f,
                "timed out after {after_s} s without a NATS handshake; check that the \
                 address is a NATS server's and reachable, or raise --nats-connect-timeout-s"
            ),
            Cause::Closed => f.write_str("the connection was closed during the handshake"),
            Cause::ServerError => f.write_str("the server refused the connection"),
            Cause::AuthorizationViolation {
                method: Some(method),
            } => write!(
                f,
                "authorization violation: the server refused the credentials; check {}",
                method.flags()
            ),
            Cause::AuthorizationViolation { method: None } => f.write_str(
                "authorization violation: the server wants credentials: give \
                 --nats-user/--nats-password, --nats-token, --nats-nkey-seed-file or \
                 --nats-credentials-file",
            ),
            Cause::SigningFailed => f.write_str(
                "the nkey or credentials could not sign the server's challenge \
                 (check --nats-nkey-seed-file or --nats-credentials-file)",
            ),
            Cause::UnknownIssuer { ca: Some(ca) } => write!(
                f,
                "the server's certificate is not signed by the CA in --nats-tls-ca ({})",
                ca.display()
            ),
            Cause::UnknownIssuer { ca: None } => f.write_str(
                "the server's certificate is not signed by a CA this host trusts: \
                 name its CA with --nats-tls-ca",
            ),
            Cause::WrongHostName => f.write_str(
                "the server's certificate is not made out to the host in the URL: \
                 connect with a name or address of its subjectAltName",
            ),
            Cause::CertificateDates => f.write_str(
                "the server's certificate has expired or is not valid yet \
                 (check its dates and this host's clock)",
            ),
            Cause::ServerCertificateV1 => f.write_str(
                "the server's certificate is X.509 v1, which is not accepted: reissue it \
                 with extensions (basicConstraints, keyUsage, extendedKeyUsage=serverAuth, \
                 subjectAltName), e.g. with `openssl x509 -req -extfile`",
            ),
            Cause::BadServerCertificate => f.write_str("the server's certificate is not accepted"),
            Cause::ClientCertificateRequired => f.write_str(
                "the server requires a client certificate (--nats-tls-cert/--nats-tls-key)",
            ),
            Cause::ClientCertificateRejected { cert } => write!(
                f,
                "the server refused the client certificate in --nats-tls-cert ({}); check \
                 that a CA the server trusts signed it, that it is valid now and made for \
                 client authentication (extendedKeyUsage=clientAuth)",
                cert.display()
            ),
            Cause::NotTls => f.write_str(
                "the server does not speak TLS there, but TLS is required (by a tls:// \
                 URL, --nats-tls-required or a --nats-tls-* file): enable TLS on the \
                 server, or connect without it",
            ),
            Cause::Tls => f.write_str("the TLS handshake failed"),
            Cause::Other(kind) => write!(f, "{kind}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A failure as the client library reports a failed TLS handshake: an I/O error
    /// around the TLS library's error.
    fn tls_failure(error: rustls::Error) -> async_nats::ConnectError {
        let io = io::Error::new(io::ErrorKind::InvalidData, error);
        async_nats::ConnectError::with_source(ConnectErrorKind::Io, io)
    }

    fn cause(error: rustls::Error, args: &NatsArgs) -> Cause {
        Cause::of(&tls_failure(error), args)
    }

    #[test]
    fn server_certificate_verdicts() {
        let args = NatsArgs::default();
        let invalid = rustls::Error::InvalidCertificate;
        assert_eq!(
            cause(invalid(CertificateError::NotValidForName), &args),
            Cause::WrongHostName
        );
        assert_eq!(
            cause(invalid(CertificateError::Expired), &args),
            Cause::CertificateDates
        );
        let v1 = rustls::OtherError(Arc::new(webpki::Error::UnsupportedCertVersion));
        assert_eq!(
            cause(invalid(CertificateError::Other(v1)), &args),
            Cause::ServerCertificateV1
        );
        let other = rustls::OtherError(Arc::new(webpki::Error::BadDer));
        assert_eq!(
            cause(invalid(CertificateError::Other(other)), &args),
            Cause::BadServerCertificate
        );
        assert_eq!(
            cause(invalid(CertificateError::UnknownIssuer), &args),
            Cause::UnknownIssuer { ca: None }
        );
    }

    #[test]
    fn a_refused_certificate_is_asked_for_when_none_was_given() {
        let alert = || rustls::Error::AlertReceived(AlertDescription::BadCertificate);
        assert_eq!(
            cause(alert(), &NatsArgs::default()),
            Cause::ClientCertificateRequired
        );
        let with_cert = NatsArgs {
            tls_cert: Some("c.pem".into()),
            ..NatsArgs::default()
        };
        assert_eq!(
            cause(alert(), &with_cert),
            Cause::ClientCertificateRejected {
                cert: "c.pem".into()
            }
        );
        let other = rustls::Error::AlertReceived(AlertDescription::HandshakeFailure);
        assert_eq!(cause(other, &with_cert), Cause::Tls);
    }

    #[test]
    fn socket_errors() {
        let args = NatsArgs::default();
        let io = |kind| {
            let error = io::Error::from(kind);
            Cause::of(&async_nats::ConnectError::from(error), &args)
        };
        assert_eq!(io(io::ErrorKind::ConnectionRefused), Cause::Refused);
        assert_eq!(io(io::ErrorKind::NetworkUnreachable), Cause::Unreachable);
        assert_eq!(io(io::ErrorKind::ConnectionReset), Cause::Closed);
        assert_eq!(
            io(io::ErrorKind::PermissionDenied),
            Cause::Other(ConnectErrorKind::Io)
        );
    }

    #[test]
    fn only_what_can_clear_is_transient() {
        for transient in [
            Cause::Refused,
            Cause::Unreachable,
            Cause::HostNotFound,
            Cause::TimedOut { after_s: 5 },
            Cause::Closed,
            Cause::ServerError,
            Cause::Other(ConnectErrorKind::Io),
        ] {
            assert!(transient.is_transient(), "{transient:?}");
        }
        for lasting in [
            Cause::AuthorizationViolation { method: None },
            Cause::SigningFailed,
            Cause::UnknownIssuer { ca: None },
            Cause::WrongHostName,
            Cause::ClientCertificateRequired,
            Cause::NotTls,
            Cause::Tls,
            Cause::Other(ConnectErrorKind::Tls),
        ] {
            assert!(!lasting.is_transient(), "{lasting:?}");
        }
    }
}
