//! `Authorization: Bearer <cluster token>` on every `/v1` route: 401 without it, 403 with
//! a wrong one, compared in constant time (`Api::token_matches`).

use super::HttpState;
use super::error::HttpError;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// Proof that the request carried the cluster token; handlers take it as an argument.
pub struct Authorized;

impl FromRequestParts<HttpState> for Authorized {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization header: send `Authorization: Bearer <cluster token>`",
            ));
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the Authorization header is not `Bearer <cluster token>`",
            )
        })?;
        if state.api().token_matches(token.trim()) {
            Ok(Authorized)
        } else {
            Err(HttpError::new(StatusCode::FORBIDDEN, "forbidden", "wrong cluster token"))
        }
    }
}
