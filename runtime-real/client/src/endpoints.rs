//! The client's list of node addresses. Who leads is not kept here: the kernel's
//! `LeaderRecord` (one per `Cluster`) holds that, by index into this list.
//!
//! Endpoints are indexed in the order they were given, then in the order leader hints
//! named new addresses; an index never changes meaning, so an index held by a retry
//! queue stays valid while the list grows.

use crate::error::ClientError;

/// Most addresses one client keeps: the configured ones plus those learned from hints.
/// A cluster has a handful of nodes; more means hints point somewhere unexpected.
pub const MAX_ENDPOINTS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointTable {
    addrs: Vec<String>,
}

impl EndpointTable {
    pub(crate) fn new(addrs: Vec<String>) -> Result<Self, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        if addrs.len() > MAX_ENDPOINTS {
            return Err(ClientError::InvalidOption {
                field: "endpoints",
                value: format!("{} addresses", addrs.len()),
                reason: format!("at most {MAX_ENDPOINTS} are kept"),
            });
        }
        let mut table = EndpointTable { addrs: Vec::with_capacity(addrs.len()) };
        for addr in addrs {
            let addr = normalize(&addr);
            if addr.is_empty() || !addr.contains(':') {
                return Err(ClientError::InvalidOption {
                    field: "endpoints",
                    value: addr,
                    reason: "expected HOST:PORT".into(),
                });
            }
            if table.index_of(&addr).is_some() {
                return Err(ClientError::InvalidOption {
                    field: "endpoints",
                    value: addr,
                    reason: "given twice".into(),
                });
            }
            table.addrs.push(addr);
        }
        Ok(table)
    }

    pub(crate) fn len(&self) -> usize {
        self.addrs.len()
    }

    pub(crate) fn addr(&self, index: usize) -> &str {
        &self.addrs[index]
    }

    pub(crate) fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub(crate) fn index_of(&self, addr: &str) -> Option<usize> {
        let addr = normalize(addr);
        self.addrs.iter().position(|a| *a == addr)
    }

    /// The index of `addr`, appending it if it is new.
    pub(crate) fn learn(&mut self, addr: &str) -> Result<usize, ClientError> {
        if let Some(i) = self.index_of(addr) {
            return Ok(i);
        }
        let addr = normalize(addr);
        if self.addrs.len() >= MAX_ENDPOINTS {
            return Err(ClientError::TooManyEndpoints { addr, max: MAX_ENDPOINTS });
        }
        self.addrs.push(addr);
        Ok(self.addrs.len() - 1)
    }
}

/// Addresses compare as trimmed strings; no name resolution (a client cannot know that
/// two names reach the same node, and the cluster hints with the address it was given).
fn normalize(addr: &str) -> String {
    addr.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> EndpointTable {
        EndpointTable::new((0..n).map(|i| format!("10.0.0.{i}:7000")).collect()).unwrap()
    }

    #[test]
    fn rejects_empty_duplicate_and_malformed() {
        assert_eq!(EndpointTable::new(vec![]), Err(ClientError::NoEndpoints));
        let dup = EndpointTable::new(vec!["a:1".into(), " a:1".into()]).unwrap_err();
        assert!(dup.to_string().contains("given twice"), "{dup}");
        let bad = EndpointTable::new(vec!["nohost".into()]).unwrap_err();
        assert!(bad.to_string().contains("HOST:PORT"), "{bad}");
        let many = EndpointTable::new((0..=MAX_ENDPOINTS).map(|i| format!("h:{i}")).collect());
        assert!(many.is_err());
    }

    #[test]
    fn hints_map_to_known_indexes_or_append() {
        let mut t = table(2);
        assert_eq!(t.learn("10.0.0.1:7000"), Ok(1));
        assert_eq!(t.learn(" 10.0.0.1:7000 "), Ok(1), "surrounding spaces do not make a new node");
        assert_eq!(t.learn("10.0.0.9:7000"), Ok(2));
        assert_eq!(t.len(), 3);
        assert_eq!(t.addr(2), "10.0.0.9:7000");
        // Existing indexes keep their meaning.
        assert_eq!(t.index_of("10.0.0.0:7000"), Some(0));
    }

    #[test]
    fn learning_stops_at_the_bound_with_a_typed_error() {
        let mut t = table(MAX_ENDPOINTS);
        assert_eq!(t.learn("10.0.0.3:7000"), Ok(3));
        assert_eq!(
            t.learn("elsewhere:1"),
            Err(ClientError::TooManyEndpoints { addr: "elsewhere:1".into(), max: MAX_ENDPOINTS })
        );
        assert_eq!(t.len(), MAX_ENDPOINTS);
    }
}
