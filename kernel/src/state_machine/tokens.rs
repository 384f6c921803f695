//! The credentials the cluster knows, by the hash of their secret. Secrets are never
//! replicated: a node hashes what a caller presents and looks the hash up here.
//!
//! Bounds: at most `MAX_TOKENS` tokens that are not bound to a member (admin, read,
//! launch, agent), and at most `MAX_TOKENS_PER_MEMBER` per member; a member's tokens
//! leave with it, so member tokens never outnumber members by more than that factor.

use crate::command::{CommandError, TokenHash, TokenId, TokenInfo, TokenRole};
use crate::ids::MemberId;
use std::collections::{BTreeMap, BTreeSet};

/// Tokens not bound to a member (each made by an operator).
pub const MAX_TOKENS: usize = 1_024;
/// Tokens of one member (a wrapper that restarts mints a new one; the old ones go with
/// the member).
pub const MAX_TOKENS_PER_MEMBER: usize = 4;
/// A token's name (`--name`).
pub const MAX_TOKEN_NAME_BYTES: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenRecord {
    pub(crate) hash: TokenHash,
    pub(crate) info: TokenInfo,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TokenTable {
    next_id: u64,
    by_id: BTreeMap<TokenId, TokenRecord>,
    by_hash: BTreeMap<TokenHash, TokenId>,
    /// Member tokens by their member, so a departure drops them without a scan.
    by_member: BTreeSet<(MemberId, TokenId)>,
    unbound: usize,
}

impl TokenTable {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.max(1)
    }

    pub(crate) fn get_by_hash(&self, hash: &TokenHash) -> Option<&TokenInfo> {
        self.by_hash.get(hash).and_then(|id| self.by_id.get(id)).map(|record| &record.info)
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = &TokenRecord> + '_ {
        self.by_id.values()
    }

    /// Checks a new token before anything changes.
    pub(crate) fn check_new(&self, hash: &TokenHash, name: &str, role: TokenRole) -> Result<(), CommandError> {
        if name.len() > MAX_TOKEN_NAME_BYTES {
            return Err(CommandError::TooLarge {
                what: "token name".into(),
                len: name.len(),
                max: MAX_TOKEN_NAME_BYTES,
            });
        }
        if self.by_hash.contains_key(hash) {
            return Err(CommandError::DuplicateToken);
        }
        match role {
            TokenRole::Member(member) => {
                let held = self.by_member.range((member, TokenId(0))..=(member, TokenId(u64::MAX))).count();
                if held >= MAX_TOKENS_PER_MEMBER {
                    return Err(CommandError::TableFull { what: format!("tokens of {member}"), count: held });
                }
            }
            _ if self.unbound >= MAX_TOKENS => {
                return Err(CommandError::TableFull { what: "tokens".into(), count: self.unbound });
            }
            _ => {}
        }
        Ok(())
    }

    /// Inserts a token that passed `check_new`.
    pub(crate) fn insert(
        &mut self,
        hash: TokenHash,
        name: &str,
        role: TokenRole,
        expires_at_unix_ms: Option<u64>,
        revision: u64,
    ) -> TokenInfo {
        debug_assert!(self.check_new(&hash, name, role).is_ok());
        let id = TokenId(self.next_id());
        self.next_id = id.0 + 1;
        let info = TokenInfo { id, name: name.to_string(), role, expires_at_unix_ms, created_rev: revision };
        self.restore_one(TokenRecord { hash, info: info.clone() });
        info
    }

    /// Adds a record as it is (restoring a snapshot); false if its id or hash is taken.
    pub(crate) fn restore_one(&mut self, record: TokenRecord) -> bool {
        let id = record.info.id;
        if self.by_id.contains_key(&id) || self.by_hash.contains_key(&record.hash) {
            return false;
        }
        match record.info.role {
            TokenRole::Member(member) => {
                self.by_member.insert((member, id));
            }
            _ => self.unbound += 1,
        }
        self.by_hash.insert(record.hash, id);
        self.by_id.insert(id, record);
        true
    }

    pub(crate) fn set_next_id(&mut self, next_id: u64) {
        self.next_id = next_id;
    }

    pub(crate) fn remove(&mut self, id: TokenId) -> Option<TokenInfo> {
        let record = self.by_id.remove(&id)?;
        self.by_hash.remove(&record.hash);
        match record.info.role {
            TokenRole::Member(member) => {
                self.by_member.remove(&(member, id));
            }
            _ => self.unbound -= 1,
        }
        Some(record.info)
    }

    /// Drops every token of `member` (at most `MAX_TOKENS_PER_MEMBER`).
    pub(crate) fn remove_member(&mut self, member: MemberId) {
        let ids: Vec<TokenId> =
            self.by_member.range((member, TokenId(0))..=(member, TokenId(u64::MAX))).map(|(_, id)| *id).collect();
        for id in ids {
            self.remove(id);
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.by_id.len() != self.by_hash.len() {
            return Err("token indexes disagree".into());
        }
        let members = self.by_id.values().filter(|r| matches!(r.info.role, TokenRole::Member(_))).count();
        if members != self.by_member.len() || members + self.unbound != self.by_id.len() {
            return Err("member token index disagrees".into());
        }
        if self.unbound > MAX_TOKENS {
            return Err(format!("{} tokens exceed the limit", self.unbound));
        }
        if let Some(last) = self.by_id.keys().next_back()
            && last.0 >= self.next_id()
        {
            return Err(format!("{last} is outside the issued range"));
        }
        Ok(())
    }
}
