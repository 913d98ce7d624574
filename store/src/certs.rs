//! `kvstore certs`: a CA and member/client certificates for a local cluster, so a
//! local (HA) control plane can run with TLS between store members and between its
//! clients and the store. Writes PEM files into one directory:
//!
//! - `ca.pem`, `ca-key.pem`: the CA (created once; later runs sign with it);
//! - `NAME.pem`, `NAME-key.pem` per `--member` (server and client use, SANs from
//!   `--hosts`; used for both the client and the peer port);
//! - `NAME.pem`, `NAME-key.pem` per `--client` (client use, common name NAME — the
//!   user name etcd derives from a client certificate).
//!
//! Keys are ECDSA P-256 and written with mode 0600, each file via a temporary name
//! and a rename, so a crash never leaves half a key behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The CA's common name; the issuer of every certificate signed here.
const CA_COMMON_NAME: &str = "kvstore local CA";

#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory the PEM files go to (created if missing).
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Member names to issue server+client certificates for (comma separated).
    #[arg(long = "member", value_delimiter = ',')]
    pub members: Vec<String>,
    /// Client names (certificate common names) to issue client certificates for.
    #[arg(long = "client", value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Host names and IP addresses member certificates are valid for.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    pub hosts: Vec<String>,
}

/// Runs `kvstore certs`.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let ca_key = load_or_create_ca(&args.dir)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    for name in &args.members {
        check_name(name)?;
        let cert = leaf(name, &args.hosts, true, &issuer)?;
        write_pair(&args.dir, name, &cert.0, &cert.1)?;
    }
    for name in &args.clients {
        check_name(name)?;
        let cert = leaf(name, &[], false, &issuer)?;
        write_pair(&args.dir, name, &cert.0, &cert.1)?;
    }
    println!(
        "certificates in {} (CA: ca.pem; {} member, {} client)",
        args.dir.display(),
        args.members.len(),
        args.clients.len()
    );
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name == "ca"
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        bail!(
            "certificate name {name:?} must be letters, digits, '-', '_' or '.' (and not \"ca\")"
        );
    }
    Ok(())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The CA key from `ca-key.pem`, or a new CA written to `ca.pem`/`ca-key.pem`.
fn load_or_create_ca(dir: &Path) -> anyhow::Result<KeyPair> {
    let key_path = dir.join("ca-key.pem");
    let cert_path = dir.join("ca.pem");
    match (key_path.exists(), cert_path.exists()) {
        (true, true) => {
            let pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?;
            KeyPair::from_pem(&pem).with_context(|| format!("bad CA key in {}", key_path.display()))
        }
        (false, false) => {
            let key = KeyPair::generate().context("cannot generate the CA key")?;
            let cert = ca_params()
                .self_signed(&key)
                .context("cannot sign the CA")?;
            write_pair(dir, "ca", &cert.pem(), &key.serialize_pem())?;
            Ok(key)
        }
        _ => bail!(
            "{} has only one of ca.pem and ca-key.pem; remove it or restore the other",
            dir.display()
        ),
    }
}

/// A certificate (PEM) and its key (PEM) for `name`, signed by `issuer`.
fn leaf(
    name: &str,
    hosts: &[String],
    server: bool,
    issuer: &Issuer<'_, KeyPair>,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        for host in hosts {
            let san = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.clone()
                        .try_into()
                        .with_context(|| format!("bad host name {host:?}"))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
    }
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("cannot sign the certificate of {name}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `NAME.pem` and `NAME-key.pem` (0600), each through a temporary file.
fn write_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    write_file(&dir.join(format!("{name}-key.pem")), key_pem, 0o600)?;
    write_file(&dir.join(format!("{name}.pem")), cert_pem, 0o644)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("pem.part");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_certificates_that_rustls_accepts_and_reuses_the_ca() {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let args = CertsArgs {
            dir: dir.path().to_path_buf(),
            members: vec!["m1".into()],
            clients: vec!["alice".into()],
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
        };
        run(&args).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        // A second run signs with the same CA.
        let second = CertsArgs {
            members: vec!["m2".into()],
            clients: vec![],
            ..args.clone()
        };
        run(&second).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        let files = crate::tls::TlsFiles {
            cert: Some(dir.path().join("m2.pem")),
            key: Some(dir.path().join("m2-key.pem")),
            trusted_ca: Some(dir.path().join("ca.pem")),
            client_cert_auth: true,
        };
        crate::tls::server_config(&files, "test").unwrap();
        crate::tls::client_config(
            Some(&dir.path().join("ca.pem")),
            Some((
                &dir.path().join("alice.pem"),
                &dir.path().join("alice-key.pem"),
            )),
            false,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("alice-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(check_name("../evil").is_err());
        assert!(check_name("ca").is_err());
    }
}
