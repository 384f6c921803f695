//! Naming a member on the command line: by id in either spelling (`process-5` as the
//! output prints it, or `process:5`), or by name.
//!
//! Names need not be unique: interpreters of one kind may well share one, and the cluster
//! keys members by id. So a name is looked up among the members now registered, and a
//! name that more than one member holds is refused with their ids listed, never resolved
//! to one of them by a guess.

use roster_kernel::{ListFilter, MemberId};
use roster_real::client::{Client, ClientError};
use roster_real::net::wire::Consistency;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(
        "no server or process is named {name:?} now (an id reads as server-ID or process-ID; see `roster ls`, \
         and `roster tombstones` for members that left)"
    )]
    NotFound { name: String },
    #[error("{name:?} is the name of {} members ({}): give the id instead", ids.len(), ids.join(", "))]
    Ambiguous { name: String, ids: Vec<String> },
    #[error("cannot look up the member named {name:?}: {source}")]
    Client { name: String, source: ClientError },
    #[error("cannot look up the member named {name:?}: the node answered a list with something else")]
    UnexpectedAnswer { name: String },
}

/// The member `given` names: an id (either spelling) as it is, else the one member of
/// that name now registered.
pub async fn resolve(client: &Client, given: &str, consistency: Consistency) -> Result<MemberId, LookupError> {
    if let Ok(id) = given.parse::<MemberId>() {
        return Ok(id);
    }
    let name = given.to_string();
    let roster_real::client::MemberList { servers, processes, .. } = client
        .list(ListFilter::default(), consistency)
        .await
        .map_err(|source| LookupError::Client { name: name.clone(), source })?;
    let servers = servers.iter().filter(|s| s.info.name == given).map(|s| MemberId::Server(s.id));
    let processes = processes.iter().filter(|p| p.info.name == given).map(|p| MemberId::Process(p.id));
    let found: Vec<MemberId> = servers.chain(processes).collect();
    match found.as_slice() {
        [] => Err(LookupError::NotFound { name }),
        [one] => Ok(*one),
        many => Err(LookupError::Ambiguous { name, ids: many.iter().map(MemberId::to_string).collect() }),
    }
}

/// Departures searched for a name no registered member holds (`roster logs` of a job
/// that ended).
const DEPARTED_SEARCHED: u32 = 1_000;

/// `resolve`, and for a name no registered member holds, the processes that left
/// recently (the newest departures the cluster keeps, at most `DEPARTED_SEARCHED`).
pub async fn resolve_with_departed(
    client: &Client,
    given: &str,
    consistency: Consistency,
) -> Result<MemberId, LookupError> {
    match resolve(client, given, consistency).await {
        Err(LookupError::NotFound { name }) => {
            let departed = client
                .tombstones(DEPARTED_SEARCHED, consistency)
                .await
                .map_err(|source| LookupError::Client { name: name.clone(), source })?;
            let mut found: Vec<MemberId> = departed
                .iter()
                .filter_map(|t| match &t.subject {
                    roster_kernel::TombstoneSubject::Process(p) if p.info.name == name => Some(MemberId::Process(p.id)),
                    _ => None,
                })
                .collect();
            found.sort();
            found.dedup();
            match found.as_slice() {
                [] => Err(LookupError::NotFound { name }),
                [one] => Ok(*one),
                many => Err(LookupError::Ambiguous { name, ids: many.iter().map(MemberId::to_string).collect() }),
            }
        }
        other => other,
    }
}

impl From<LookupError> for String {
    fn from(e: LookupError) -> String {
        e.to_string()
    }
}
