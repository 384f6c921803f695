//! TLS on the node's side: how the binary port and the HTTP listener accept a connection,
//! the server configuration made from `tls_cert`, `tls_key` and `tls_ca`, and its reload
//! on SIGHUP. The simulator build has none of it: there `Acceptor` and `Connector` are
//! always `Plain`, and the token check (in `dispatch`) is the same in every build.
//!
//! Peers use mutual TLS: a node presents its certificate when it calls a peer, and a peer
//! connection without a certificate the CA verified is refused. Clients verify the node's
//! certificate and may present one of their own (checked against the same CA if they do).

use crate::config::NodeConfig;
use crate::net::transport::{Connector, Stream, TransportError};
use tokio::net::TcpStream;

/// How a listener takes a new connection: as it is, or through a TLS handshake.
#[derive(Clone, Default)]
pub enum Acceptor {
    #[default]
    Plain,
    #[cfg(not(madsim))]
    Tls(ServerTls),
}

/// A new connection, after the TLS handshake if there is one.
pub enum Accepted {
    Stream(Stream),
    /// TLS is on, but the client spoke plain TCP: it is told so in plain frames.
    Plaintext(TcpStream),
}

impl Acceptor {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Acceptor::Plain)
    }

    /// Runs the TLS handshake (when on). `peer` names the other side in errors.
    pub async fn accept(&self, tcp: TcpStream, peer: &str) -> Result<Accepted, TransportError> {
        let _ = peer; // only TLS errors name it
        match self {
            Acceptor::Plain => Ok(Accepted::Stream(Stream::Plain(tcp))),
            #[cfg(not(madsim))]
            Acceptor::Tls(tls) => tls.accept(tcp, peer).await,
        }
    }
}

/// The node's TLS, when it is on: one acceptor for both listeners and one connector for
/// every connection the node makes (peers, its own client, forwarded launches).
pub struct Security {
    pub acceptor: Acceptor,
    pub connector: Connector,
    #[cfg(not(madsim))]
    node_tls: Option<on::NodeTls>,
}

/// Why the node's TLS files could not be used (none can fail in the simulator, which
/// has no TLS).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[cfg(not(madsim))]
    #[error(transparent)]
    Tls(#[from] roster_client::TlsError),
}

impl Security {
    /// Plain TCP, unless the config names the TLS files; their problems are refused here,
    /// naming the file.
    pub fn from_config(config: &NodeConfig) -> Result<Security, SecurityError> {
        #[cfg(not(madsim))]
        if let (Some(cert), Some(key), Some(ca)) = (&config.tls_cert, &config.tls_key, &config.tls_ca) {
            let files = roster_client::TlsFiles { ca: ca.clone(), cert: Some(cert.clone()), key: Some(key.clone()) };
            let tls = on::NodeTls::load(files)?;
            return Ok(Security {
                acceptor: Acceptor::Tls(tls.server.clone()),
                connector: Connector::Tls(tls.client.clone()),
                node_tls: Some(tls),
            });
        }
        let _ = config;
        Ok(Security {
            acceptor: Acceptor::Plain,
            connector: Connector::Plain,
            #[cfg(not(madsim))]
            node_tls: None,
        })
    }

    /// With TLS on, re-reads the files on every SIGHUP: the next connections use them.
    /// A file that does not load is refused with a logged error, and the old ones kept.
    pub fn reload_on_sighup(&self) {
        #[cfg(not(madsim))]
        if let Some(tls) = &self.node_tls {
            tokio::spawn(on::reload_on_sighup(tls.clone()));
        }
    }
}

#[cfg(not(madsim))]
pub use on::ServerTls;

#[cfg(not(madsim))]
mod on {
    use super::Accepted;
    use crate::net::transport::{Stream, TransportError};
    use roster_client::tls::{self, TlsError, TlsFiles};
    use std::sync::{Arc, RwLock};
    use tokio::net::TcpStream;

    /// The first byte of a TLS handshake record.
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;

    /// The server configuration, replaceable at run time; each accept takes the current one.
    #[derive(Clone)]
    pub struct ServerTls {
        inner: Arc<RwLock<(Arc<rustls::ServerConfig>, TlsFiles)>>,
    }

    impl ServerTls {
        fn current(&self) -> (Arc<rustls::ServerConfig>, TlsFiles) {
            // Replaced whole under the lock: poisoning cannot leave it half-written.
            self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
        }

        fn replace(&self, config: Arc<rustls::ServerConfig>, files: TlsFiles) {
            *self.inner.write().unwrap_or_else(|e| e.into_inner()) = (config, files);
        }

        pub(super) async fn accept(&self, tcp: TcpStream, peer: &str) -> Result<Accepted, TransportError> {
            // A plain client's first byte is the top byte of a frame length (0), a TLS
            // client's a handshake record: peeking tells them apart without consuming.
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await? == 0 {
                return Err(TransportError::Closed);
            }
            if first[0] != TLS_HANDSHAKE_RECORD {
                return Ok(Accepted::Plaintext(tcp));
            }
            let (config, files) = self.current();
            match tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                Ok(stream) => Ok(Accepted::Stream(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(stream))))),
                Err(e) => Err(TransportError::Tls { addr: peer.to_string(), reason: describe_failure(&e, &files) }),
            }
        }
    }

    /// Why a client's (or peer's) handshake with this node failed, in words.
    fn describe_failure(e: &std::io::Error, files: &TlsFiles) -> String {
        use rustls::AlertDescription as A;
        match tls::rustls_error(e) {
            Some(rustls::Error::InvalidCertificate(c)) => {
                format!("its certificate {}", tls::describe_certificate_error(c, &files.ca))
            }
            Some(rustls::Error::AlertReceived(
                alert @ (A::UnknownCA | A::BadCertificate | A::CertificateExpired | A::DecryptError),
            )) => {
                format!("it refused this node's certificate ({alert:?}): check that it trusts the CA in tls_ca")
            }
            Some(rustls::Error::InvalidMessage(_)) => "it did not speak TLS".to_string(),
            Some(other) => other.to_string(),
            None => e.to_string(),
        }
    }

    fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let roots = Arc::new(tls::load_roots(&files.ca)?);
        let identity = tls::load_identity(files.cert.as_deref(), files.key.as_deref())?
            .ok_or(TlsError::Incomplete { given: "CA", missing: "tls_cert and tls_key" })?;
        let invalid_ca =
            |e: String| TlsError::Invalid { what: "CA file", path: files.ca.display().to_string(), reason: e };
        // Clients may come without a certificate; a peer without one is refused after its
        // hello (dispatch), when its role is known.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, tls::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid_ca(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid_ca(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| identity.mismatch(e))?;
        Ok(Arc::new(config))
    }

    #[derive(Clone)]
    pub(super) struct NodeTls {
        files: TlsFiles,
        pub(super) server: ServerTls,
        pub(super) client: roster_client::ClientTls,
    }

    impl NodeTls {
        pub(super) fn load(files: TlsFiles) -> Result<NodeTls, TlsError> {
            let server = ServerTls { inner: Arc::new(RwLock::new((server_config(&files)?, files.clone()))) };
            let client = roster_client::ClientTls::load(files.clone())?;
            Ok(NodeTls { files, server, client })
        }

        /// Both configurations are made before either is replaced: a bad file changes nothing.
        fn reload(&self) -> Result<(), TlsError> {
            let server = server_config(&self.files)?;
            let client = tls::client_config(&self.files)?;
            self.server.replace(server, self.files.clone());
            self.client.replace(client, self.files.clone());
            Ok(())
        }
    }

    pub(super) async fn reload_on_sighup(tls: NodeTls) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP: TLS certificates reload only on a restart");
                return;
            }
        };
        while hangup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.files.cert.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                    "SIGHUP: TLS certificates reloaded; new connections use them"
                ),
                Err(e) => tracing::error!("SIGHUP: TLS reload refused, the previous certificates stay in use: {e}"),
            }
        }
    }
}

/// A throwaway CA and the certificates it signs (rcgen), for `roster dev --tls` and tests:
/// not for production, where an operator's own CA issues the files.
#[cfg(not(madsim))]
pub mod throwaway {
    use std::path::{Path, PathBuf};

    pub struct Ca {
        issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    }

    /// A certificate and its key, PEM.
    pub struct Issued {
        pub cert_pem: String,
        pub key_pem: String,
    }

    /// Valid from an hour ago (clocks differ a little) to `valid_for` from now.
    pub fn validity(valid_for: std::time::Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
        let now = time::OffsetDateTime::now_utc();
        (now - time::Duration::hours(1), now + valid_for)
    }

    impl Ca {
        pub fn new(name: &str) -> Result<Ca, rcgen::Error> {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
            let (not_before, not_after) = validity(std::time::Duration::from_secs(10 * 365 * 86_400));
            (params.not_before, params.not_after) = (not_before, not_after);
            Ok(Ca { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)? })
        }

        pub fn cert_pem(&self) -> String {
            self.issuer.pem()
        }

        /// A certificate for `names` (host names or IP addresses), for server and client
        /// use both (a node is each to its peers), valid from `not_before` to `not_after`.
        pub fn issue(
            &self,
            common_name: &str,
            names: &[&str],
            (not_before, not_after): (time::OffsetDateTime, time::OffsetDateTime),
        ) -> Result<Issued, rcgen::Error> {
            let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
            params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
            params.extended_key_usages =
                vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            (params.not_before, params.not_after) = (not_before, not_after);
            let key = rcgen::KeyPair::generate()?;
            let cert = params.signed_by(&key, &self.issuer)?;
            Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
        }
    }

    impl Issued {
        /// Writes `NAME.pem` and `NAME.key` (owner-only) into `dir`; returns both paths.
        pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
            use std::os::unix::fs::OpenOptionsExt;
            let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
            std::fs::write(&cert, &self.cert_pem)?;
            let mut file =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&key)?;
            std::io::Write::write_all(&mut file, self.key_pem.as_bytes())?;
            Ok((cert, key))
        }
    }
}
