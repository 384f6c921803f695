//! `Authorization: Bearer <token>` on every `/v1` route: 401 without it, 403 with one the
//! cluster does not know (the token file's, or one made by `roster token create`).
//! Reads are open to every role; each handler that writes or acts asks `may` first, which
//! applies the same rule as the binary protocol (`Api::admit`) and writes the audit trail.

use super::HttpState;
use super::error::HttpError;
use crate::net::wire::ClientRequest;
use crate::server::api::Admitted;
use crate::server::authority::Caller;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use roster_kernel::SessionOwner;

/// Proof that the request carried a token the cluster knows; handlers take it as an
/// argument and ask it whether the caller may act.
pub struct Authorized {
    caller: Caller,
}

impl Authorized {
    /// Whether the caller may send `request`: a refusal is 403 `forbidden` naming the role
    /// and the action; an admin action goes to the audit trail. `Ok` holds the caller's
    /// credential, which the sessions it opens or uses are bound to.
    pub async fn may(&self, state: &HttpState, request: &ClientRequest) -> Result<SessionOwner, HttpError> {
        Ok(self.admit(state, request).await?.owner)
    }

    /// Whether the caller may see token and audit events in the event stream (as `token ls`).
    pub async fn sees_credentials(&self, state: &HttpState) -> Result<bool, HttpError> {
        Ok(self.admit(state, &ClientRequest::Watch { after_revision: 0 }).await?.sees_credentials)
    }

    async fn admit(&self, state: &HttpState, request: &ClientRequest) -> Result<Admitted, HttpError> {
        let admitted = state.api().admit(&self.caller, request)?;
        if let Some(audit) = &admitted.audit {
            state.api().record_audit(audit.clone()).await;
        }
        Ok(admitted)
    }
}

impl FromRequestParts<HttpState> for Authorized {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization header: send `Authorization: Bearer <token>`",
            ));
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
            HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the Authorization header is not `Bearer <token>`")
        })?;
        match state.api().credentials().authenticate(token.trim(), crate::rt::clock::unix_ms()) {
            Ok((caller, _)) => Ok(Authorized { caller }),
            Err(refusal) => Err(HttpError::new(StatusCode::FORBIDDEN, "forbidden", refusal.to_string())),
        }
    }
}
