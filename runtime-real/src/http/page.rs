//! `GET /`: the cluster web page. One HTML file (`page.html`) with its CSS and script
//! inline, embedded in the binary: no build step, nothing fetched from elsewhere, so it
//! works offline and its version is the node's.
//!
//! Loading it needs no token because it carries no data: the page asks for the token,
//! keeps it in the tab's sessionStorage, and reads `/v1/status`, `/v1/tombstones` and the
//! `/v1/events` stream of the node that served it, with the token in the Authorization
//! header (which is why it reads the stream with `fetch`, not `EventSource`).
//!
//! The Content-Security-Policy lets nothing load from anywhere, runs only the page's own
//! `<style>` and `<script>` (named by a nonce fresh in every response, so an injected
//! script or style would not run), and lets the script fetch from this origin alone.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const PAGE_HTML: &str = include_str!("page.html");
/// Where `page.html` wants the response's nonce, on its `<style>` and `<script>`.
const NONCE_SLOT: &str = "{{nonce}}";

pub async fn page() -> Response {
    let nonce = format!("{:032x}", rand::random::<u128>());
    let (body, policy) = render(&nonce);
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The nonce is hex, so the policy is a valid header value.
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&policy).expect("ASCII policy"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Each response has its own nonce; a cached copy would carry a stale one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page and its Content-Security-Policy for one response.
fn render(nonce: &str) -> (String, String) {
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()), "a nonce is hex: {nonce:?}");
    let body = PAGE_HTML.replace(NONCE_SLOT, nonce);
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    (body, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_one_script_and_one_style_and_both_carry_the_nonce() {
        assert_eq!(PAGE_HTML.matches("<script").count(), 1);
        assert_eq!(PAGE_HTML.matches("<style").count(), 1);
        assert_eq!(PAGE_HTML.matches(NONCE_SLOT).count(), 2);
        assert!(PAGE_HTML.contains(&format!("<script nonce=\"{NONCE_SLOT}\">")));
        assert!(PAGE_HTML.contains(&format!("<style nonce=\"{NONCE_SLOT}\">")));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_needs_no_unsafe_inline() {
        for needle in ["src=", "http://", "https://", "@import", "url("] {
            assert!(!PAGE_HTML.contains(needle), "page.html contains {needle:?}");
        }
        // Inline style attributes and handlers would be refused by the policy.
        for needle in [" style=\"", " onclick=", " onload=", " onsubmit=", "innerHTML"] {
            assert!(!PAGE_HTML.contains(needle), "page.html contains {needle:?}");
        }
    }

    #[test]
    fn each_response_names_its_nonce_in_the_page_and_the_policy() {
        let (body, policy) = render("0123abcd");
        assert!(!body.contains(NONCE_SLOT));
        assert_eq!(body.matches("nonce=\"0123abcd\"").count(), 2);
        assert!(policy.contains("script-src 'nonce-0123abcd'"), "{policy}");
        assert!(policy.contains("style-src 'nonce-0123abcd'"), "{policy}");
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
    }
}
