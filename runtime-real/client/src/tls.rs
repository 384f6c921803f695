//! TLS for connections to a node (not in the simulator build): the PEM files, the rustls
//! configurations made from them, and one-line errors that say whose certificate failed
//! and why (expired, unknown CA, wrong name).
//!
//! The crypto provider is rustls' `ring`, passed explicitly to every builder, so nothing
//! depends on a process-wide default being installed.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The files TLS is made of. A node needs all three; a client needs the CA and may
/// present a certificate of its own (cert and key together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signs the nodes' (and clients') certificates, PEM.
    pub ca: PathBuf,
    /// This side's certificate chain, PEM, leaf first.
    pub cert: Option<PathBuf>,
    /// This side's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} {path}: {reason}")]
    Read { what: &'static str, path: String, reason: String },
    #[error("TLS {what} {path} holds no {expected}: give a PEM file with one")]
    Empty { what: &'static str, path: String, expected: &'static str },
    #[error("TLS {what} {path} has expired: it was valid until {not_after}; issue a new one")]
    Expired { what: &'static str, path: String, not_after: String },
    #[error("TLS {what} {path} is not valid yet: it is valid from {not_before}; check the clock")]
    NotYetValid { what: &'static str, path: String, not_before: String },
    #[error("TLS {what} {path} is unusable: {reason}")]
    Invalid { what: &'static str, path: String, reason: String },
    #[error("TLS certificate {cert} and key {key} do not go together: {reason}")]
    KeyMismatch { cert: String, key: String, reason: String },
    #[error("TLS {given} given without {missing}: a certificate needs its key, and a key its certificate")]
    Incomplete { given: &'static str, missing: &'static str },
}

/// A certificate chain and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// The crypto provider of every TLS configuration Roster makes.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Every certificate in a PEM file, each checked to be valid now.
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read { what, path: display(path), reason: e.to_string() })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid { what, path: display(path), reason: format!("bad PEM: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: display(path), expected: "CERTIFICATE block" });
    }
    let now_unix_s = unix_now_s();
    for cert in &certs {
        let Some((not_before, not_after)) = validity(cert) else {
            return Err(TlsError::Invalid { what, path: display(path), reason: "not an X.509 certificate".into() });
        };
        if now_unix_s > not_after {
            return Err(TlsError::Expired { what, path: display(path), not_after: utc(not_after) });
        }
        if now_unix_s < not_before {
            return Err(TlsError::NotYetValid { what, path: display(path), not_before: utc(not_before) });
        }
    }
    Ok(certs)
}

/// The CA file as a root store.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let what = "CA file";
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid { what, path: display(path), reason: e.to_string() })?;
    }
    Ok(roots)
}

/// A certificate and its key, when both are given; neither is fine, one alone is not.
pub fn load_identity(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Identity>, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(TlsError::Incomplete { given: "certificate", missing: "its key" }),
        (None, Some(_)) => return Err(TlsError::Incomplete { given: "key", missing: "its certificate" }),
        (Some(c), Some(k)) => (c, k),
    };
    let chain = load_certs("certificate", cert_path)?;
    let what = "key";
    let bytes =
        std::fs::read(key_path).map_err(|e| TlsError::Read { what, path: display(key_path), reason: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty { what, path: display(key_path), expected: "PRIVATE KEY block" }
        }
        e => TlsError::Invalid { what, path: display(key_path), reason: format!("bad PEM: {e}") },
    })?;
    Ok(Some(Identity { chain, key, cert_path: cert_path.to_path_buf(), key_path: key_path.to_path_buf() }))
}

impl Identity {
    pub fn mismatch(&self, e: rustls::Error) -> TlsError {
        TlsError::KeyMismatch { cert: display(&self.cert_path), key: display(&self.key_path), reason: e.to_string() }
    }
}

/// The configuration of a client (or a node calling its peers): verifies the node's
/// certificate against the CA and presents this side's certificate, if any.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = load_roots(&files.ca)?;
    let identity = load_identity(files.cert.as_deref(), files.key.as_deref())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid { what: "CA file", path: display(&files.ca), reason: e.to_string() })?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let (chain, key) = (id.chain.clone(), id.key.clone_key());
            builder.with_client_auth_cert(chain, key).map_err(|e| id.mismatch(e))?
        }
    };
    Ok(Arc::new(config))
}

/// A client's TLS configuration, shared by its connections and replaceable at run time
/// (a node reloads its certificates on SIGHUP): each new connection takes the current one.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<RwLock<Loaded>>,
}

struct Loaded {
    config: Arc<rustls::ClientConfig>,
    files: TlsFiles,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("files", &self.current().1).finish()
    }
}

impl ClientTls {
    pub fn load(files: TlsFiles) -> Result<ClientTls, TlsError> {
        let config = client_config(&files)?;
        Ok(ClientTls { inner: Arc::new(RwLock::new(Loaded { config, files })) })
    }

    /// Makes the next connections use `config` (built from `files`).
    pub fn replace(&self, config: Arc<rustls::ClientConfig>, files: TlsFiles) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Loaded { config, files };
    }

    pub(crate) fn current(&self) -> (Arc<rustls::ClientConfig>, TlsFiles) {
        // Replaced whole under the lock: poisoning cannot leave it half-written.
        let loaded = self.inner.read().unwrap_or_else(|e| e.into_inner());
        (loaded.config.clone(), loaded.files.clone())
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if that is what it is.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Why this client's handshake with a node failed, in words (after "TLS with ADDR: ").
pub fn describe_client_failure(e: &rustls::Error, files: &TlsFiles) -> String {
    use rustls::AlertDescription as A;
    let own = || match &files.cert {
        Some(cert) => format!("this client's certificate {}", cert.display()),
        None => "this client's certificate".to_string(),
    };
    match e {
        rustls::Error::InvalidCertificate(c) => {
            format!("the node's certificate {}", describe_certificate_error(c, &files.ca))
        }
        rustls::Error::AlertReceived(A::CertificateExpired) => format!("the node refused {}: it has expired", own()),
        rustls::Error::AlertReceived(A::UnknownCA | A::BadCertificate | A::DecryptError) => {
            format!("the node refused {}: it is not signed by the node's CA", own())
        }
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            "the node asks for a client certificate: give --tls-cert and --tls-key".to_string()
        }
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            "the node does not answer in TLS: is TLS off there (no tls_cert, tls_key, tls_ca)?".to_string()
        }
        other => other.to_string(),
    }
}

/// What is wrong with a certificate the other side presented (after "... certificate ").
pub fn describe_certificate_error(c: &rustls::CertificateError, ca: &Path) -> String {
    use rustls::CertificateError as C;
    match c {
        C::Expired => "has expired".to_string(),
        C::ExpiredContext { time, not_after } => format!(
            "has expired: it was valid until {} (now {})",
            utc(not_after.as_secs() as i64),
            utc(time.as_secs() as i64)
        ),
        C::NotValidYet => "is not valid yet; check the clocks".to_string(),
        C::NotValidYetContext { time, not_before } => format!(
            "is not valid yet: it is valid from {} (now {}); check the clocks",
            utc(not_before.as_secs() as i64),
            utc(time.as_secs() as i64)
        ),
        C::UnknownIssuer | C::BadSignature => {
            format!("is not signed by the CA in {} (unknown CA)", ca.display())
        }
        C::NotValidForName => "does not name the address connected to (wrong name)".to_string(),
        C::NotValidForNameContext { expected, presented } => format!(
            "is for {}, not {} (wrong name): connect by a name it holds, or issue one that holds this one",
            if presented.is_empty() { "no name".to_string() } else { presented.join(", ") },
            expected.to_str()
        ),
        other => format!("is refused: {other:?}"),
    }
}

fn unix_now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `(not_before, not_after)` of a DER X.509 certificate, in Unix seconds.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (tag, certificate, _) = der(cert)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, mut tbs, _) = der(certificate)?;
    (tag == SEQUENCE).then_some(())?;
    // [0] version (optional), serial number, signature algorithm, issuer, then validity.
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = der(tbs)?.2;
    }
    let (tag, validity, _) = der(tbs)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, not_before, rest) = der(validity)?;
    let not_before = der_time(tag, not_before)?;
    let (tag, not_after, _) = der(rest)?;
    Some((not_before, der_time(tag, not_after)?))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element: `(tag, content, rest)`.
fn der(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`, in Unix seconds.
fn der_time(tag: u8, s: &[u8]) -> Option<i64> {
    // Digits only, so the slices below fall on character boundaries.
    let s = s.strip_suffix(b"Z")?;
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s = std::str::from_utf8(s).ok()?;
    let (year, rest) = match tag {
        UTC_TIME if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let days = days_from_civil(year, field(0)?, field(2)?);
    Some(days * 86_400 + field(4)? * 3_600 + field(6)? * 60 + field(8)?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds.
pub fn utc(unix_s: i64) -> String {
    let (days, secs) = (unix_s.div_euclid(86_400), unix_s.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3_600, secs % 3_600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_valid(not_before: time::OffsetDateTime, not_after: time::OffsetDateTime) -> rcgen::Certificate {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.not_before = not_before;
        params.not_after = not_after;
        params.self_signed(&rcgen::KeyPair::generate().expect("key")).expect("cert")
    }

    #[test]
    fn the_validity_of_a_certificate_is_read_from_its_der() {
        let (from, to) = (rcgen::date_time_ymd(2001, 2, 3), rcgen::date_time_ymd(2049, 12, 31));
        let cert = cert_valid(from, to);
        assert_eq!(validity(cert.der()), Some((from.unix_timestamp(), to.unix_timestamp())));
        // After 2049 X.509 switches from UTCTime to GeneralizedTime.
        let late = rcgen::date_time_ymd(2077, 7, 7);
        assert_eq!(validity(cert_valid(from, late).der()).map(|v| v.1), Some(late.unix_timestamp()));
        assert_eq!(validity(b"not a certificate"), None);
    }

    #[test]
    fn a_malformed_date_is_no_date_and_no_panic() {
        assert_eq!(
            der_time(UTC_TIME, b"010203040506Z"),
            Some(rcgen::date_time_ymd(2001, 2, 3).unix_timestamp() + 14_706)
        );
        // Twelve bytes but a multi-byte character: slicing by bytes would panic.
        assert_eq!(der_time(UTC_TIME, "01020304050\u{e9}Z".as_bytes()), None);
        assert_eq!(der_time(UTC_TIME, "0102030405\u{e9}Z".as_bytes()), None);
        assert_eq!(der_time(GENERALIZED_TIME, b"2001O2030405O6Z"), None);
        assert_eq!(der_time(UTC_TIME, b"010203040506"), None);
    }

    #[test]
    fn dates_are_printed_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_825_599), "2000-02-29 11:59:59 UTC");
        assert_eq!(utc(rcgen::date_time_ymd(2077, 7, 7).unix_timestamp()), "2077-07-07 00:00:00 UTC");
    }

    #[test]
    fn an_expired_certificate_file_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("roster-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("old.pem");
        let cert = cert_valid(rcgen::date_time_ymd(2001, 1, 1), rcgen::date_time_ymd(2002, 1, 1));
        std::fs::write(&path, cert.pem()).expect("write");
        let e = load_certs("certificate", &path).expect_err("refused").to_string();
        assert!(e.contains("old.pem") && e.contains("has expired") && e.contains("2002-01-01"), "{e}");
        assert!(!e.contains('\n'));
        std::fs::write(&path, "no pem here").expect("write");
        let e = load_certs("certificate", &path).expect_err("refused").to_string();
        assert!(e.contains("holds no CERTIFICATE"), "{e}");
        let e = load_identity(Some(&path), None).err().expect("refused").to_string();
        assert!(e.contains("without its key"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
