//! Credentials as JSON: never a secret nor its hash.

use roster_kernel::{TokenInfo, TokenRole};
use serde::{Deserialize, Serialize};

/// `roster token ls --json` and `GET /v1/tokens` (as `{"tokens": [...]}`), and the data
/// of a `token_created` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: u64,
    pub name: String,
    /// `admin`, `read`, `launch`, `agent` or `member`.
    pub role: String,
    /// The server an `agent` token is bound to.
    pub server: Option<u64>,
    /// The member a `member` token is bound to (`process-5`).
    pub member: Option<String>,
    pub expires_at_unix_ms: Option<u64>,
    pub created_rev: u64,
}

impl From<&TokenInfo> for TokenView {
    fn from(t: &TokenInfo) -> Self {
        let (server, member) = match t.role {
            TokenRole::Agent(s) => (Some(s.0), None),
            TokenRole::Member(m) => (None, Some(m.to_string())),
            TokenRole::Admin | TokenRole::Read | TokenRole::Launch => (None, None),
        };
        TokenView {
            id: t.id.0,
            name: t.name.clone(),
            role: t.role.name().to_string(),
            server,
            member,
            expires_at_unix_ms: t.expires_at_unix_ms,
            created_rev: t.created_rev,
        }
    }
}

/// `{"tokens": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}
