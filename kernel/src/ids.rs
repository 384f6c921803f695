//! Identifiers. Servers are keyed by their Raft node id, never by hostname, so two
//! servers on one host cannot collide (Zeppelin keyed by hostname and did).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A server node; equal to its Raft node id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServerId(pub u64);

/// A worker process, assigned by the state machine when the process registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProcessId(pub u64);

/// A client session, assigned by the state machine when the session opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// Anything that heartbeats and can expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberId {
    Server(ServerId),
    Process(ProcessId),
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server-{}", self.0)
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process-{}", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session-{}", self.0)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberId::Server(id) => id.fmt(f),
            MemberId::Process(id) => id.fmt(f),
        }
    }
}

/// A member id that does not read as `server-N`, `server:N`, `process-N` or `process:N`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad member id {given:?}: expected server-ID or process-ID (server:ID and process:ID are read too)")]
pub struct MemberIdParseError {
    pub given: String,
}

/// Reads the form `Display` prints (`process-5`) and the colon form (`process:5`), so an
/// id copied from any output is taken back as it is.
impl std::str::FromStr for MemberId {
    type Err = MemberIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MemberIdParseError { given: s.to_string() };
        let (kind, number) = s.split_once(['-', ':']).ok_or_else(bad)?;
        // `u64::from_str` takes a leading `+`; an id never has one.
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let id: u64 = number.parse().map_err(|_| bad())?;
        match kind {
            "server" => Ok(MemberId::Server(ServerId(id))),
            "process" => Ok(MemberId::Process(ProcessId(id))),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_as_it_prints_and_in_the_colon_form() {
        for member in [MemberId::Server(ServerId(2)), MemberId::Process(ProcessId(5))] {
            assert_eq!(member.to_string().parse::<MemberId>(), Ok(member));
            assert_eq!(member.to_string().replace('-', ":").parse::<MemberId>(), Ok(member));
        }
    }

    #[test]
    fn anything_else_is_refused_naming_it() {
        for bad in ["process", "process-", "process-+5", "process-5x", "proc-5", "web", "server:-1", "5"] {
            let err = bad.parse::<MemberId>().expect_err(bad);
            assert_eq!(err.given, bad);
            assert!(err.to_string().contains("process-ID"), "{err}");
        }
    }
}
