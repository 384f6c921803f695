//! Errors: `{"error": {"kind", "message", ...}}` from HTTP and from the CLI's `--json`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    pub error: ErrorBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable for scripts: `not_found`, `no_leader`, `bad_request`, `cas_failed`, ...
    pub kind: String,
    /// The one line the CLI prints.
    pub message: String,
    /// Fields some kinds carry: `revision` (`not_found` of a key or member), `current` and
    /// `revision` (`cas_failed`), `oldest_available` (`compacted`).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ErrorView {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorView { error: ErrorBody { kind: kind.into(), message: message.into(), details: serde_json::Map::new() } }
    }

    /// With `details` (an object; anything else is dropped) beside kind and message.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        if let serde_json::Value::Object(map) = details {
            self.error.details.extend(map);
        }
        self
    }
}
