//! The TLS files, checked before any connection is tried. The client library loads
//! them only while connecting and then reports a refused client certificate as
//! "could not add certificate or key", without the reason; loading them here the same
//! way names the file and the reason: no certificate in the CA file, an X.509 v1
//! client certificate, a key that does not belong to the certificate.

use std::path::{Path, PathBuf};

use async_nats::rustls::pki_types::pem::{self, PemObject};
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::rustls::{self, ClientConfig, InconsistentKeys, RootCertStore};

use super::error::ConnectError;

/// What is wrong with a TLS file that can be read.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileProblem {
    /// The file holds no `CERTIFICATE` section.
    #[error("no PEM certificate in it")]
    NoCertificate,
    /// The file holds no private key section.
    #[error("no PEM private key in it")]
    NoKey,
    /// The file is not well-formed PEM.
    #[error("not valid PEM")]
    Pem(#[source] pem::Error),
    /// The client certificate has no version 3 fields (made without extensions).
    #[error(
        "an X.509 v1 certificate, which is not accepted: add extensions (basicConstraints, \
         keyUsage, extendedKeyUsage=clientAuth, subjectAltName), e.g. with \
         `openssl x509 -req -extfile`"
    )]
    CertificateV1,
    /// The certificate cannot be parsed.
    #[error("not a usable X.509 certificate")]
    BadCertificate(#[source] webpki::Error),
    /// The key is not the private key of the client certificate.
    #[error("not the private key of the certificate in --nats-tls-cert ({})", cert.display())]
    KeyMismatch {
        /// The client certificate file.
        cert: PathBuf,
    },
    /// The TLS library refuses the key and certificate for another reason, such as an
    /// unsupported key type.
    #[error("refused by the TLS library")]
    Refused(#[source] rustls::Error),
}

/// Checks `--nats-tls-ca`: PEM holding at least one certificate that can be trusted.
pub(super) async fn check_ca(path: &Path) -> Result<(), ConnectError> {
    const FLAG: &str = "--nats-tls-ca";
    let unusable = |problem| unusable(FLAG, path, problem);
    let certificates = certificates(&read(FLAG, path).await?).map_err(unusable)?;
    for certificate in &certificates {
        webpki::anchor_from_trusted_cert(certificate)
            .map_err(|error| unusable(TlsFileProblem::BadCertificate(error)))?;
    }
    Ok(())
}

/// Checks `--nats-tls-cert` and `--nats-tls-key` as the client library will use them:
/// an X.509 v3 certificate (chain) and the private key that belongs to it.
pub(super) async fn check_client_identity(cert: &Path, key: &Path) -> Result<(), ConnectError> {
    const CERT_FLAG: &str = "--nats-tls-cert";
    const KEY_FLAG: &str = "--nats-tls-key";
    let chain =
        certificates(&read(CERT_FLAG, cert).await?).map_err(|p| unusable(CERT_FLAG, cert, p))?;
    match webpki::EndEntityCert::try_from(&chain[0]) {
        Ok(_) => {}
        Err(webpki::Error::UnsupportedCertVersion) => {
            return Err(unusable(CERT_FLAG, cert, TlsFileProblem::CertificateV1));
        }
        Err(error) => {
            return Err(unusable(
                CERT_FLAG,
                cert,
                TlsFileProblem::BadCertificate(error),
            ));
        }
    }
    let private_key = PrivateKeyDer::from_pem_slice(&read(KEY_FLAG, key).await?).map_err(|e| {
        unusable(
            KEY_FLAG,
            key,
            match e {
                pem::Error::NoItemsFound => TlsFileProblem::NoKey,
                other => TlsFileProblem::Pem(other),
            },
        )
    })?;
    // The same call the client library makes, which compares the key with the
    // certificate's public key.
    ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain, private_key)
        .map(drop)
        .map_err(|error| {
            let problem = match error {
                rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
                    TlsFileProblem::KeyMismatch {
                        cert: cert.to_owned(),
                    }
                }
                other => TlsFileProblem::Refused(other),
            };
            unusable(KEY_FLAG, key, problem)
        })
}

async fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| ConnectError::ReadTlsFile {
            flag,
            path: path.to_owned(),
            source,
        })
}

/// The certificates of a PEM file; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsFileProblem> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsFileProblem::Pem)?;
    if certificates.is_empty() {
        return Err(TlsFileProblem::NoCertificate);
    }
    Ok(certificates)
}

fn unusable(flag: &'static str, path: &Path, problem: TlsFileProblem) -> ConnectError {
    ConnectError::UnusableTlsFile {
        flag,
        path: path.to_owned(),
        problem,
    }
}
