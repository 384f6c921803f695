//! `roster launch --json` and `POST /v1/launch`.

use roster_client::LaunchStarted;
use serde::{Deserialize, Serialize};

/// Where a launched program started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    /// The server that runs it.
    pub server: u64,
    /// The process it registered as.
    pub process: u64,
    /// The file on that server that holds its output (`roster logs` reads it).
    pub output_file: String,
}

impl From<&LaunchStarted> for Launched {
    fn from(s: &LaunchStarted) -> Self {
        Launched { server: s.server.0, process: s.process.0, output_file: s.output_file.clone() }
    }
}
