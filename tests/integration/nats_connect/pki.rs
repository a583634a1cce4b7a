//! Key material made by openssl for the connection tests: a private PKI (CAs, server
//! and client certificates, one of them X.509 v1) and user nkeys.

use std::path::Path;
use std::process::Command;

/// Runs openssl in `dir` with whitespace-separated arguments; returns its stdout.
pub fn openssl(dir: &Path, arguments: &str) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(arguments.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {arguments}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Extensions of a client certificate (X.509 v3).
const CLIENT_EXTENSIONS: &str = concat!(
    "basicConstraints=CA:FALSE\n",
    "keyUsage=digitalSignature,keyEncipherment\n",
    "extendedKeyUsage=clientAuth\n",
);

/// Certificates made by openssl in `dir`, each `NAME.pem` with its key `NAME.key`:
/// - `ca`: a CA; `server`: its certificate for 127.0.0.1; `client`: its client
///   certificate; `client-v1`: its client certificate made without extensions, which
///   makes it X.509 v1;
/// - `other-ca`: a second CA; `stranger`: its client certificate.
pub fn make_certificates(dir: &Path) {
    self_signed_ca(dir, "ca");
    issue(
        dir,
        "server",
        "ca",
        Some(
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        ),
    );
    issue(dir, "client", "ca", Some(CLIENT_EXTENSIONS));
    issue(dir, "client-v1", "ca", None);
    let text = openssl(dir, "x509 -in client-v1.pem -noout -text");
    assert!(
        String::from_utf8_lossy(&text).contains("Version: 1 "),
        "openssl made a v3 certificate without extensions; this test needs a v1 one"
    );
    self_signed_ca(dir, "other-ca");
    issue(dir, "stranger", "other-ca", Some(CLIENT_EXTENSIONS));
}

fn self_signed_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={name} -keyout {name}.key -out {name}.pem"
        ),
    );
}

/// Issues `NAME.pem` and `NAME.key`, signed by `CA.pem`: X.509 v3 with `extensions`
/// (lines of an openssl extensions file), v1 without.
fn issue(dir: &Path, name: &str, ca: &str, extensions: Option<&str>) {
    openssl(
        dir,
        &format!("req -newkey rsa:2048 -nodes -subj /CN={name} -keyout {name}.key -out {name}.csr"),
    );
    let mut sign = format!(
        "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 -out {name}.pem"
    );
    if let Some(extensions) = extensions {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        sign.push_str(&format!(" -extfile {name}.ext"));
    }
    openssl(dir, &sign);
}

pub fn tls_block(dir: &Path, verify: bool) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    format!(
        "tls {{\n cert_file: \"{}\"\n key_file: \"{}\"\n ca_file: \"{}\"\n verify: {verify}\n timeout: 2\n}}",
        file("server.pem"),
        file("server.key"),
        file("ca.pem"),
    )
}

/// A user nkey pair `(seed, public key)` in the nkeys text encoding, from an Ed25519
/// key made by openssl. The encoding: base32 (RFC 4648, no padding) of the prefix
/// byte(s), the 32 raw key bytes and a CRC-16/XMODEM of both, little-endian.
pub fn user_nkey_pair(dir: &Path) -> (String, String) {
    const PREFIX_SEED: u8 = 18 << 3;
    const PREFIX_USER: u8 = 20 << 3;
    openssl(dir, "genpkey -algorithm ed25519 -out nkey.pem");
    // The DER forms end with the 32-byte private seed and the 32-byte public key.
    let private = openssl(dir, "pkey -in nkey.pem -outform DER");
    let public = openssl(dir, "pkey -in nkey.pem -pubout -outform DER");
    let mut seed = vec![PREFIX_SEED | (PREFIX_USER >> 5), (PREFIX_USER & 31) << 3];
    seed.extend_from_slice(&private[private.len() - 32..]);
    let mut user = vec![PREFIX_USER];
    user.extend_from_slice(&public[public.len() - 32..]);
    (nkey_encode(seed), nkey_encode(user))
}

fn nkey_encode(mut bytes: Vec<u8>) -> String {
    let mut crc: u16 = 0;
    for byte in &bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    bytes.extend_from_slice(&crc.to_le_bytes());
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut text, mut buffer, mut bits) = (String::new(), 0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        text.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    text
}
