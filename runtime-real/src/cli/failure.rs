//! How a client command failed: one line on stderr, and with `--json` also the error
//! HTTP answers, `{"error": {"kind", "message", ...}}` (`view::ErrorView`), on stdout.

use super::lookup::LookupError;
use roster_real::client::ClientError;
use roster_real::view::ErrorView;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The cluster's or the client library's answer: its kind is the one HTTP gives it.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// What was asked for is not there (kind `not_found`); `details` says more (the
    /// revision the absence was read at).
    #[error("{message}")]
    NotFound { message: String, details: serde_json::Value },
    /// A member named on the command line that could not be found: `not_found`, or
    /// `ambiguous` for a name several members hold.
    #[error("{0}")]
    Lookup(#[from] LookupError),
    /// Anything else: a bad argument, an unreadable file, a watch that found no node in
    /// time (kind `failed`).
    #[error("{0}")]
    Failed(String),
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Failed(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError::Failed(message.to_string())
    }
}

impl CliError {
    /// The JSON `--json` prints for it.
    pub fn view(&self) -> ErrorView {
        match self {
            CliError::Client(e) => roster_real::http::client_error_view(e.clone()),
            CliError::NotFound { message, details } => {
                ErrorView::new("not_found", message).with_details(details.clone())
            }
            CliError::Lookup(e) => {
                let message = e.to_string();
                match e {
                    LookupError::NotFound { .. } => ErrorView::new("not_found", message),
                    LookupError::Ambiguous { .. } => ErrorView::new("ambiguous", message),
                    LookupError::Client { source, .. } => {
                        let mut view = roster_real::http::client_error_view(source.clone());
                        view.error.message = message;
                        view
                    }
                    LookupError::UnexpectedAnswer { .. } => ErrorView::new("failed", message),
                }
            }
            CliError::Failed(message) => ErrorView::new("failed", message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failure_prints_the_kind_http_gives_it() {
        let no_leader = CliError::from(ClientError::NoLeader {
            endpoints: vec!["a:1".into()],
            waited_ms: 5,
            last_error: "x".into(),
        });
        let view = no_leader.view();
        assert_eq!(view.error.kind, "no_leader");
        assert_eq!(view.error.message, no_leader.to_string(), "the JSON says what stderr says");

        let absent = CliError::NotFound { message: "key \"k\" is not set".into(), details: json!({ "revision": 9 }) };
        assert_eq!(
            serde_json::to_value(absent.view()).unwrap(),
            json!({ "error": { "kind": "not_found", "message": "key \"k\" is not set", "revision": 9 } })
        );
        let ambiguous = CliError::from(LookupError::Ambiguous { name: "web".into(), ids: vec!["process-1".into()] });
        assert_eq!(ambiguous.view().error.kind, "ambiguous");
        assert_eq!(CliError::from("bad --kind").view().error.kind, "failed");
    }
}
