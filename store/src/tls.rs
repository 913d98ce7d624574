//! TLS for the client and peer ports, and for our own clients (rustls with the ring
//! provider only). Servers do the handshake themselves (not through tonic's TLS
//! acceptor) so the decrypted stream can still be wrapped by the `:authority` shim;
//! handshakes run concurrently, each bounded in time, so one slow or hostile client
//! cannot stall accepting others. A member configured with a trusted CA and
//! `--client-cert-auth`/`--peer-client-cert-auth` refuses, during the handshake, any
//! client or peer whose certificate that CA did not sign.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the listen backlog.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for the gRPC server to pick them up.
const ACCEPTED_QUEUE: usize = 256;

/// Makes ring the process-wide rustls provider. Called once at startup by every binary
/// that uses TLS; later calls are no-ops.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate files of one listener (etcd's `--cert-file`/`--key-file`/
/// `--trusted-ca-file`/`--client-cert-auth`, or their `--peer-` twins).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// Whether a certificate is configured at all.
    pub fn has_cert(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }
}

pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM certificate in {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a private key from {}", path.display()))
}

fn roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .with_context(|| format!("bad CA certificate in {}", path.display()))?;
    }
    Ok(roots)
}

/// The server side of a listener: its certificate, and client verification when
/// `client_cert_auth` is on (then `trusted_ca` is required).
pub fn server_config(files: &TlsFiles, what: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        anyhow::bail!("{what}: TLS needs both a certificate and a key file");
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if files.client_cert_auth {
        let ca = files
            .trusted_ca
            .as_ref()
            .ok_or_else(|| anyhow!("{what}: client certificate auth needs a trusted CA file"))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(ca)?),
            provider(),
        )
        .build()
        .map_err(|e| anyhow!("{what}: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .with_context(|| format!("{what}: certificate and key do not match"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client-side rustls config: server verification against `ca` (or none at all with
/// `insecure_skip_verify`), and a client certificate when given.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    insecure_skip_verify: bool,
) -> anyhow::Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let ca = ca.ok_or_else(|| anyhow!("TLS needs a CA certificate (--cacert)"))?;
        builder.with_root_certificates(roots(ca)?)
    };
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .context("client certificate and key do not match")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// `--insecure-skip-tls-verify`: accepts any server certificate (signatures are still
/// checked, so the handshake itself stays sound).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects to `host:port` over TLS with `config` (used where tonic's own TLS settings
/// cannot express the config, i.e. `--insecure-skip-tls-verify`).
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((host, port)).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// What the gRPC handlers can learn about a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain, if it presented one (verified when client
    /// certificate auth is on).
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl TlsConnectInfo {
    /// The common name of the client's certificate (etcd's user name for a request
    /// without a token when client certificates are required).
    pub fn common_name(&self) -> Option<String> {
        let leaf = self.peer_certs.as_ref()?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let cn = cert.subject().iter_common_name().next()?;
        cn.as_str().ok().map(str::to_owned)
    }
}

/// A server-side TLS connection after its handshake.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let (tcp, session) = self.0.get_ref();
        TlsConnectInfo {
            remote_addr: tcp.peer_addr().ok(),
            peer_certs: session.peer_certificates().map(|c| Arc::new(c.to_vec())),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts connections on `listener` and yields those whose TLS handshake succeeded.
/// A failed handshake (wrong CA, no certificate, plain HTTP/2) closes that connection
/// only and is logged at debug level. Stops when the consumer drops the stream.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%addr, error = %e, what, "TLS handshake refused")
                    }
                    Err(_) => tracing::debug!(%addr, what, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
