//! Query strings: repeated keys (`label=a=1&label=b=2`) and flags given bare (`?stale`).

use super::error::HttpError;
use crate::net::wire::Consistency;
use std::str::FromStr;

/// The pairs of a query string, in order, percent-decoded.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect();
        Params(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A flag: present bare or as `true`/`1`; `false`/`0` or absent is off.
    pub fn flag(&self, key: &str) -> Result<bool, HttpError> {
        match self.get(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("") | Some("true") | Some("1") => Ok(true),
            Some(other) => Err(HttpError::bad_request(format!("?{key}={other}: expected true or false"))),
        }
    }

    pub fn number<T: FromStr>(&self, key: &str) -> Result<Option<T>, HttpError> {
        self.get(key)
            .map(|v| v.parse::<T>().map_err(|_| HttpError::bad_request(format!("?{key}={v}: expected a number"))))
            .transpose()
    }

    /// `?stale` reads what the answering node has applied; the default is linearizable.
    pub fn consistency(&self) -> Result<Consistency, HttpError> {
        Ok(if self.flag("stale")? { Consistency::Stale } else { Consistency::Linearizable })
    }

    /// Rejects keys this route does not know, so a typo is never silently ignored.
    pub fn only(&self, known: &[&str]) -> Result<(), HttpError> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(HttpError::bad_request(format!(
                "unknown query parameter {k:?}; this route takes: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_bare_flags_and_decoding() {
        let p = Params::parse(Some("label=team%3Da&label=zone=b&stale&limit=5"));
        assert_eq!(p.all("label").collect::<Vec<_>>(), vec!["team=a", "zone=b"]);
        assert!(p.flag("stale").unwrap());
        assert!(!p.flag("absent").unwrap());
        assert_eq!(p.number::<u32>("limit").unwrap(), Some(5));
        assert!(p.only(&["label", "stale", "limit"]).is_ok());
        let e = p.only(&["label"]).unwrap_err();
        assert!(e.message.contains("\"stale\""), "{}", e.message);
        assert!(Params::parse(Some("limit=x")).number::<u32>("limit").is_err());
        assert!(Params::parse(Some("stale=maybe")).flag("stale").is_err());
    }
}
