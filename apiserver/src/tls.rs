//! TLS by default: a CA and a serving certificate generated at first start (rcgen) and
//! kept in the data directory, and the rustls server configuration built from them
//! (ring provider, ALPN h2 and http/1.1). The CA certificate is what kubeconfigs embed.
//!
//! Files are written through a temporary file and a rename, so a crash never leaves a
//! half-written key; keys are 0600. Existing files are never overwritten: a directory
//! with some but not all of the four files is an error for the operator to resolve.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// File names inside the PKI directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const SERVING_CERT_FILE: &str = "apiserver.crt";
pub const SERVING_KEY_FILE: &str = "apiserver.key";
/// How long generated certificates are valid, in years.
const VALIDITY_YEARS: i32 = 10;

/// Why the PKI could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "{dir}: has {present:?} but not {missing:?}; restore the missing files or move them all away to generate a new CA"
    )]
    Partial {
        dir: PathBuf,
        present: Vec<&'static str>,
        missing: Vec<&'static str>,
    },
    #[error("bad PEM in {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The CA and serving certificate and keys, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` with `mode` via a temporary file, fsync and rename.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

/// The current year, for certificate validity (a day's precision is plenty).
fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

fn validity(params: &mut CertificateParams) {
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALIDITY_YEARS, 1, 1);
}

fn generate(hosts: &[String]) -> Result<Pki, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kvstore-apiserver-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;

    let serving = serving_params(hosts)?;
    let serving_key = KeyPair::generate()?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;
    Ok(Pki {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        serving_cert_pem: serving_cert.pem(),
        serving_key_pem: serving_key.serialize_pem(),
    })
}

/// Loads <dir>/{ca.crt,ca.key,apiserver.crt,apiserver.key}, or creates them (rcgen) at first start
/// with SANs 127.0.0.1, localhost and `hosts`. Files written 0600 (keys) via temp file + rename.
pub fn ensure_pki(dir: &Path, hosts: &[String]) -> Result<Pki, TlsError> {
    let files = [
        CA_CERT_FILE,
        CA_KEY_FILE,
        SERVING_CERT_FILE,
        SERVING_KEY_FILE,
    ];
    let (present, missing): (Vec<&'static str>, Vec<&'static str>) =
        files.iter().partition(|f| dir.join(f).exists());
    // A CA copied from another apiserver of the same cluster (HA): this one issues
    // its own serving certificate from it.
    if present == [CA_CERT_FILE, CA_KEY_FILE] {
        return issue_from_ca(dir, hosts);
    }
    if !present.is_empty() && !missing.is_empty() {
        return Err(TlsError::Partial {
            dir: dir.to_path_buf(),
            present,
            missing,
        });
    }
    if missing.is_empty() {
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read_to_string(&p).map_err(io_err(&p))
        };
        let pki = Pki {
            ca_cert_pem: read(CA_CERT_FILE)?,
            ca_key_pem: read(CA_KEY_FILE)?,
            serving_cert_pem: read(SERVING_CERT_FILE)?,
            serving_key_pem: read(SERVING_KEY_FILE)?,
        };
        // Fail at start, not at the first handshake, if a file is damaged.
        server_config(&pki)?;
        return Ok(pki);
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let pki = generate(hosts)?;
    // Keys first, certificates last: a crash in between leaves a partial set that
    // `ensure_pki` refuses, never a certificate without its key.
    for (file, contents, mode) in [
        (CA_KEY_FILE, &pki.ca_key_pem, 0o600),
        (SERVING_KEY_FILE, &pki.serving_key_pem, 0o600),
        (SERVING_CERT_FILE, &pki.serving_cert_pem, 0o644),
        (CA_CERT_FILE, &pki.ca_cert_pem, 0o644),
    ] {
        let p = dir.join(file);
        write_atomic(&p, contents.as_bytes(), mode).map_err(io_err(&p))?;
    }
    Ok(pki)
}

/// The serving certificate's parameters: SANs 127.0.0.1, localhost and `hosts`.
fn serving_params(hosts: &[String]) -> Result<CertificateParams, TlsError> {
    let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    // `new` turns names that parse as IP addresses into IP SANs.
    let mut serving = CertificateParams::new(names)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kvstore-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    validity(&mut serving);
    Ok(serving)
}

/// Issues `apiserver.{crt,key}` from the `ca.{crt,key}` already in `dir`.
fn issue_from_ca(dir: &Path, hosts: &[String]) -> Result<Pki, TlsError> {
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p).map_err(io_err(&p))
    };
    let ca_cert_pem = read(CA_CERT_FILE)?;
    let ca_key_pem = read(CA_KEY_FILE)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Pem {
        what: "the CA key",
        reason: e.to_string(),
    })?;
    let ca_der = parse_certs(&ca_cert_pem, "the CA certificate")?
        .into_iter()
        .next()
        .expect("parse_certs returns at least one");
    let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key).map_err(|e| TlsError::Pem {
        what: "the CA certificate",
        reason: e.to_string(),
    })?;
    let serving_key = KeyPair::generate()?;
    let serving_cert = serving_params(hosts)?.signed_by(&serving_key, &issuer)?;
    let pki = Pki {
        ca_cert_pem,
        ca_key_pem,
        serving_cert_pem: serving_cert.pem(),
        serving_key_pem: serving_key.serialize_pem(),
    };
    server_config(&pki)?;
    for (file, contents, mode) in [
        (SERVING_KEY_FILE, &pki.serving_key_pem, 0o600),
        (SERVING_CERT_FILE, &pki.serving_cert_pem, 0o644),
    ] {
        let p = dir.join(file);
        write_atomic(&p, contents.as_bytes(), mode).map_err(io_err(&p))?;
    }
    Ok(pki)
}

/// The certificates of a PEM bundle.
pub fn parse_certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// The rustls server configuration: the serving certificate, ring, ALPN h2 + http/1.1.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = parse_certs(&pki.serving_cert_pem, "the serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes()).map_err(|e| {
        TlsError::Pem {
            what: "the serving key",
            reason: e.to_string(),
        }
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn first_start_creates_then_later_starts_load() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let a = ensure_pki(&pki_dir, &["apiserver.example".into()]).unwrap();
        assert_eq!(mode(&pki_dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&pki_dir.join(SERVING_KEY_FILE)), 0o600);
        assert!(a.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let b = ensure_pki(&pki_dir, &[]).unwrap();
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.serving_key_pem, b.serving_key_pem);
        // No temporary files left behind.
        let names: Vec<String> = std::fs::read_dir(&pki_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn partial_or_damaged_directories_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        ensure_pki(dir.path(), &[]).unwrap();
        let key = dir.path().join(SERVING_KEY_FILE);
        std::fs::remove_file(&key).unwrap();
        let e = ensure_pki(dir.path(), &[]).unwrap_err();
        assert!(matches!(e, TlsError::Partial { .. }), "{e}");
        assert!(
            !key.exists(),
            "a partial set must not be completed silently"
        );
        std::fs::write(&key, "garbage").unwrap();
        assert!(matches!(
            ensure_pki(dir.path(), &[]),
            Err(TlsError::Pem { .. })
        ));
    }

    /// A real handshake over a socket: the client trusts only our CA, checks the name
    /// (IP and DNS SANs) and negotiates h2.
    #[test]
    fn clients_trusting_the_ca_connect_by_ip_and_name_with_h2() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_pki(dir.path(), &["api.test".into()]).unwrap();
        let server = server_config(&pki).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in parse_certs(&pki.ca_cert_pem, "ca").unwrap() {
            roots.add(c).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let client = Arc::new(client);
        for name in ["127.0.0.1", "localhost", "api.test"] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = server.clone();
            let t = std::thread::spawn(move || {
                let (tcp, _) = listener.accept().unwrap();
                let conn = rustls::ServerConnection::new(server).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
                s.flush().unwrap();
            });
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
            let conn = rustls::ClientConnection::new(client.clone(), server_name).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello");
            assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]));
            t.join().unwrap();
        }
    }
}
