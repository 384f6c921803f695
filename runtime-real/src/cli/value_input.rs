//! A value given on the command line, on standard input (`-`) or in a file (`--file`):
//! the last two take values too large for an argument list (about 128 KiB on Linux).

use std::io::Read;
use std::path::Path;

/// Most bytes read for one value. The cluster's own limit is lower (64 KiB by default);
/// this bound only keeps a mistaken `< /dev/zero` from filling memory before it says so.
pub const MAX_VALUE_INPUT_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ValueInputError {
    #[error("no value given: give VALUE, `-` for standard input, or --file FILE")]
    Missing,
    #[error("cannot read the value from {from}: {source}")]
    Read { from: String, source: std::io::Error },
    #[error("the value from {from} is over {MAX_VALUE_INPUT_BYTES} bytes, far over the cluster's value limit")]
    TooLarge { from: String },
    #[error("the value from {from} is not UTF-8 text (byte {valid_up_to} is not): values are text")]
    NotText { from: String, valid_up_to: usize },
}

/// The value: `given` as it is, unless it is `-` (standard input), or the file's content.
pub fn read(given: Option<&str>, file: Option<&Path>) -> Result<String, ValueInputError> {
    match (given, file) {
        (_, Some(path)) => {
            let from = path.display().to_string();
            let f = std::fs::File::open(path).map_err(|source| ValueInputError::Read { from: from.clone(), source })?;
            read_bounded(f, from)
        }
        (Some("-"), None) => read_bounded(std::io::stdin().lock(), "standard input".to_string()),
        (Some(value), None) => Ok(value.to_string()),
        (None, None) => Err(ValueInputError::Missing),
    }
}

fn read_bounded(source: impl Read, from: String) -> Result<String, ValueInputError> {
    let mut bytes = Vec::new();
    source
        .take(MAX_VALUE_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ValueInputError::Read { from: from.clone(), source })?;
    if bytes.len() as u64 > MAX_VALUE_INPUT_BYTES {
        return Err(ValueInputError::TooLarge { from });
    }
    String::from_utf8(bytes).map_err(|e| ValueInputError::NotText { from, valid_up_to: e.utf8_error().valid_up_to() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_over_the_bound_is_refused_and_one_at_it_is_read() {
        let at = vec![b'a'; MAX_VALUE_INPUT_BYTES as usize];
        assert_eq!(read_bounded(&at[..], "x".into()).expect("at the bound").len(), at.len());
        let over = vec![b'a'; MAX_VALUE_INPUT_BYTES as usize + 1];
        assert!(matches!(read_bounded(&over[..], "x".into()), Err(ValueInputError::TooLarge { .. })));
    }

    #[test]
    fn bytes_that_are_not_text_are_refused_naming_where() {
        let err = read_bounded(&b"ok\xff"[..], "standard input".into()).expect_err("not UTF-8");
        assert!(matches!(err, ValueInputError::NotText { valid_up_to: 2, .. }), "{err}");
        assert!(err.to_string().contains("standard input"), "{err}");
    }
}
