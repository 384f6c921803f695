//! How a node proves to another that it is a peer: both know the peer key, and each
//! shows it by an HMAC-SHA256 over both sides' fresh nonces, so the key never crosses the
//! wire and an answer recorded once is worth nothing later. No client credential opens a
//! peer connection.
//!
//! The exchange (`Hello` and `HelloReply` in `wire.rs`):
//! 1. the connecting node sends `Auth::Peer { from, cluster, nonce: a }`;
//! 2. the accepting node answers `Challenge { node, nonce: b, proof: mac(SERVER, a, b, from, node) }`;
//! 3. the connecting node checks that proof (the other side is a peer too), and sends
//!    `PeerProof { proof: mac(CLIENT, a, b, from, node) }`;
//! 4. the accepting node checks it and answers `Welcome` or `Refused`.
//!
//! The labels differ by side, so a proof cannot be reflected back to its sender.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Shortest peer key accepted (bytes of the key file, trimmed): 128 bits as hex.
pub const MIN_PEER_KEY_BYTES: usize = 32;
/// Longest peer key accepted.
pub const MAX_PEER_KEY_BYTES: usize = 1024;

const SERVER_LABEL: &[u8] = b"roster peer v1: accepting side";
const CLIENT_LABEL: &[u8] = b"roster peer v1: connecting side";

pub type Nonce = [u8; 32];
pub type Proof = [u8; 32];

/// The cluster's peer key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerKey(Arc<[u8]>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerKeyError {
    #[error(
        "the peer key is {len} bytes: it needs at least {MIN_PEER_KEY_BYTES} (make one with `roster token new-key`)"
    )]
    TooShort { len: usize },
    #[error("the peer key is {len} bytes, over the limit of {MAX_PEER_KEY_BYTES}")]
    TooLong { len: usize },
}

impl PeerKey {
    /// A key from a key file's text (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<PeerKey, PeerKeyError> {
        let key = text.trim().as_bytes();
        if key.len() < MIN_PEER_KEY_BYTES {
            return Err(PeerKeyError::TooShort { len: key.len() });
        }
        if key.len() > MAX_PEER_KEY_BYTES {
            return Err(PeerKeyError::TooLong { len: key.len() });
        }
        Ok(PeerKey(key.into()))
    }

    /// A one-way digest of the key (for ids derived from it): the key cannot be found
    /// from it.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"roster peer key fingerprint v1");
        h.update(&self.0);
        h.finalize().into()
    }

    fn mac(&self, label: &[u8], connecting: &Nonce, accepting: &Nonce, from: u64, to: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(label);
        mac.update(connecting);
        mac.update(accepting);
        mac.update(&from.to_le_bytes());
        mac.update(&to.to_le_bytes());
        mac
    }

    /// The accepting node's proof (step 2).
    pub fn accepting_proof(&self, connecting: &Nonce, accepting: &Nonce, from: u64, to: u64) -> Proof {
        self.mac(SERVER_LABEL, connecting, accepting, from, to).finalize().into_bytes().into()
    }

    /// The connecting node's proof (step 3).
    pub fn connecting_proof(&self, connecting: &Nonce, accepting: &Nonce, from: u64, to: u64) -> Proof {
        self.mac(CLIENT_LABEL, connecting, accepting, from, to).finalize().into_bytes().into()
    }

    /// Checks the accepting side's proof, in constant time.
    pub fn verify_accepting(&self, proof: &Proof, connecting: &Nonce, accepting: &Nonce, from: u64, to: u64) -> bool {
        self.mac(SERVER_LABEL, connecting, accepting, from, to).verify_slice(proof).is_ok()
    }

    /// Checks the connecting side's proof, in constant time.
    pub fn verify_connecting(&self, proof: &Proof, connecting: &Nonce, accepting: &Nonce, from: u64, to: u64) -> bool {
        self.mac(CLIENT_LABEL, connecting, accepting, from, to).verify_slice(proof).is_ok()
    }
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerKey(<{} bytes>)", self.0.len())
    }
}

/// Where fresh nonces come from: the OS in production, the simulator's seeded RNG there.
pub type NonceSource = Arc<dyn Fn() -> Nonce + Send + Sync>;

/// What a node presents when it connects to another.
#[derive(Clone)]
pub struct PeerAuth {
    pub key: PeerKey,
    /// This node's id.
    pub from: u64,
    /// This node's cluster id, when it knows it (read at each connect).
    pub cluster: Arc<dyn Fn() -> Option<u64> + Send + Sync>,
    pub nonces: NonceSource,
}

impl std::fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAuth").field("from", &self.from).finish_non_exhaustive()
    }
}

/// How a connection authenticates: a token (clients), or the peer key (nodes).
#[derive(Clone, Debug)]
pub enum Credential {
    Token(String),
    Peer(PeerAuth),
}

/// SHA-256 of a token's secret: what the replicated record keeps.
pub fn token_hash(secret: &str) -> roster_kernel::TokenHash {
    roster_kernel::TokenHash(Sha256::digest(secret.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> PeerKey {
        PeerKey::parse(text).unwrap()
    }

    #[test]
    fn each_side_proves_the_key_over_both_nonces() {
        let k = key(&"k".repeat(40));
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let server = k.accepting_proof(&a, &b, 7, 1);
        assert!(k.verify_accepting(&server, &a, &b, 7, 1));
        assert!(!k.verify_accepting(&server, &a, &[3u8; 32], 7, 1), "another nonce");
        assert!(!k.verify_accepting(&server, &a, &b, 8, 1), "another sender");
        assert!(!k.verify_connecting(&server, &a, &b, 7, 1), "a proof reflected to the other side");
        let client = k.connecting_proof(&a, &b, 7, 1);
        assert!(k.verify_connecting(&client, &a, &b, 7, 1));
        assert!(!key(&"x".repeat(40)).verify_connecting(&client, &a, &b, 7, 1), "another key");
    }

    #[test]
    fn short_keys_are_refused_and_never_printed() {
        assert_eq!(PeerKey::parse("  short \n"), Err(PeerKeyError::TooShort { len: 5 }));
        assert!(PeerKey::parse(&"k".repeat(2000)).is_err());
        let printed = format!("{:?}", key(&"secret-".repeat(6)));
        assert!(!printed.contains("secret"), "{printed}");
    }

    #[test]
    fn a_token_is_kept_as_its_sha256() {
        let hash = token_hash("abc");
        assert_eq!(hash.0[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
