//! Wire framing for every TCP message between nodes and clients.
//!
//! A frame is
//!
//! ```text
//! +----------------------+---------+------------------------+
//! | length: u32, big end | version | body: postcard         |
//! +----------------------+---------+------------------------+
//!   4 bytes               1 byte    length - 1 bytes
//! ```
//!
//! `length` counts what follows the length field (the version byte and the body), so it
//! is at least 1. `max_frame_bytes` bounds `length`; a receiver learns a frame is too
//! large from its first four bytes and refuses it before buffering the body.
//!
//! [`encode_frame`] returns the whole frame in one buffer, so the driver writes it with a
//! single write (a length and a body written separately cost ~40 ms per RPC to Nagle
//! and delayed ACK). [`decode_frame`] never panics, whatever the bytes: malformed input is
//! a [`CodecError`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of the frame layout and of every message type carried in it. A peer with
/// another version is refused with [`CodecError::BadVersion`] instead of misread.
/// (4: a peer's hello and a readmission carry the cluster id; status shows it. 5: status
/// tells the bootstrap check who is deciding and whom a node formed the cluster with.
/// 6: credentials with roles, peers prove the peer key, tokens, audit events. 7: lists
/// are paged with a cursor, status counts processes instead of listing them, typed errors
/// for an answer over the frame and for the per-connection and snapshot bounds; the
/// cluster id is sealed by the first leader; `SessionExpired` and `SequenceReused`.
/// 8: `OverBudget`, and status carries the state budget's use. 9: status carries the
/// leader's expiry guard: lateness grace and the brake's alarm. 10: sessions belong to
/// the credential that opened them (`NotYourSession`), close, and a node's requests on a
/// caller's behalf.)
pub const WIRE_VERSION: u8 = 10;

/// Size of the length field.
pub const LENGTH_BYTES: usize = 4;

/// Length field plus version byte: the smallest complete frame.
pub const HEADER_BYTES: usize = LENGTH_BYTES + 1;

/// A sensible bound on `length` for drivers without a configured one (16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: have {have} bytes of {need}; the peer closed or crashed mid-write")]
    Truncated { have: usize, need: usize },
    /// `len` counts the version byte and the body.
    #[error("frame of {len} bytes is over the limit of {max}: raise max_frame_bytes on both ends or send less")]
    Oversized { len: usize, max: usize },
    #[error("wire version {got}, this build speaks {expected}: run the same Roster version on both ends")]
    BadVersion { got: u8, expected: u8 },
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The length field is zero: not even a version byte follows.
    #[error("empty frame: the length field is zero, so no version byte follows")]
    Empty,
}

/// Serialises `msg` into one complete frame.
///
/// Fails with [`CodecError::Oversized`] when the version byte plus body would exceed
/// `max_frame_bytes` (or the `u32` length field), and with [`CodecError::Malformed`] when
/// the value cannot be expressed in postcard (e.g. a sequence of unknown length).
pub fn encode_frame<T: Serialize>(msg: &T, max_frame_bytes: usize) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&[0; LENGTH_BYTES]);
    buf.push(WIRE_VERSION);
    let mut buf = postcard::to_extend(msg, buf).map_err(|e| CodecError::Malformed(format!("cannot encode: {e}")))?;
    let len = buf.len() - LENGTH_BYTES;
    let max = max_frame_bytes.min(u32::MAX as usize);
    if len > max {
        return Err(CodecError::Oversized { len, max });
    }
    let len_field = u32::try_from(len).expect("len is bounded by u32::MAX above");
    buf[..LENGTH_BYTES].copy_from_slice(&len_field.to_be_bytes());
    debug_assert_eq!(frame_len(&buf), Some(buf.len()));
    Ok(buf)
}

/// Decodes the first frame in `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (read more, then call again
/// with the same bytes plus the new ones), or `Ok(Some((msg, consumed)))` where `consumed`
/// is the frame's size: drop that many bytes from the front of the buffer.
///
/// Errors are detected as early as the bytes allow: [`CodecError::Empty`] and
/// [`CodecError::Oversized`] from the length field alone, [`CodecError::BadVersion`] from
/// the fifth byte. After an error the stream is out of step: close the connection.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8], max_frame_bytes: usize) -> Result<Option<(T, usize)>, CodecError> {
    let Some(len) = read_length(buf) else {
        return Ok(None);
    };
    if len == 0 {
        return Err(CodecError::Empty);
    }
    if len > max_frame_bytes {
        return Err(CodecError::Oversized { len, max: max_frame_bytes });
    }
    if let Some(&got) = buf.get(LENGTH_BYTES)
        && got != WIRE_VERSION
    {
        return Err(CodecError::BadVersion { got, expected: WIRE_VERSION });
    }
    // `len <= max_frame_bytes <= usize::MAX`, and `len < 2^32`, so this cannot overflow on
    // 64-bit targets; checked anyway so a 32-bit build cannot wrap.
    let Some(frame_end) = LENGTH_BYTES.checked_add(len) else {
        return Err(CodecError::Oversized { len, max: max_frame_bytes });
    };
    let Some(body) = buf.get(HEADER_BYTES..frame_end) else {
        return Ok(None);
    };
    let (msg, rest) = postcard::take_from_bytes::<T>(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after the message in a {len}-byte frame",
            rest.len()
        )));
    }
    Ok(Some((msg, frame_end)))
}

/// Checks the bytes left over when the stream ends (after draining [`decode_frame`]).
///
/// Nothing left is a clean end: `Ok(())`. Part of a frame is
/// [`CodecError::Truncated`], with `need` the size of the whole frame (or of the length
/// field, when not even that arrived). A complete frame still in `buf` means the caller
/// did not drain it, which is reported as [`CodecError::Malformed`] rather than hidden.
pub fn check_eof(buf: &[u8]) -> Result<(), CodecError> {
    if buf.is_empty() {
        return Ok(());
    }
    let have = buf.len();
    match frame_len(buf) {
        None => {
            let need = read_length(buf).map_or(LENGTH_BYTES, |len| LENGTH_BYTES.saturating_add(len));
            Err(CodecError::Truncated { have, need })
        }
        Some(_) => Err(CodecError::Malformed(
            "a complete frame is still buffered at end of stream; decode it before check_eof".to_string(),
        )),
    }
}

/// The size of the complete frame at the front of `buf`, or `None` if it has not all
/// arrived. Does not validate the frame.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let total = LENGTH_BYTES.checked_add(read_length(buf)?)?;
    (buf.len() >= total).then_some(total)
}

fn read_length(buf: &[u8]) -> Option<usize> {
    let field: [u8; LENGTH_BYTES] = buf.get(..LENGTH_BYTES)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(field)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};
    use crate::ids::SessionId;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Pair(u8, i64),
        Named { text: String, bytes: Vec<u8> },
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        id: u64,
        maybe: Option<u32>,
        shapes: Vec<Shape>,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Unit),
            (any::<u8>(), any::<i64>()).prop_map(|(a, b)| Shape::Pair(a, b)),
            (".{0,12}", proptest::collection::vec(any::<u8>(), 0..24))
                .prop_map(|(text, bytes)| Shape::Named { text, bytes }),
        ]
    }

    fn msg() -> impl Strategy<Value = Msg> {
        (any::<u64>(), any::<Option<u32>>(), proptest::collection::vec(shape(), 0..6))
            .prop_map(|(id, maybe, shapes)| Msg { id, maybe, shapes })
    }

    const MAX: usize = 4096;

    fn request(key: &str) -> Request {
        Request {
            session: SessionId(9),
            seq: 3,
            command: Command::KvPut { key: key.to_string(), value: "v".to_string() },
        }
    }

    #[test]
    fn frame_layout_is_length_version_body() {
        let frame = encode_frame(&7u8, MAX).unwrap();
        assert_eq!(frame, vec![0, 0, 0, 2, WIRE_VERSION, 7]);
        let (value, consumed) = decode_frame::<u8>(&frame, MAX).unwrap().unwrap();
        assert_eq!((value, consumed), (7, 6));
        assert_eq!(check_eof(&[]), Ok(()));
    }

    #[test]
    fn real_request_round_trips() {
        let frame = encode_frame(&request("k"), MAX).unwrap();
        let (back, consumed) = decode_frame::<Request>(&frame, MAX).unwrap().unwrap();
        assert_eq!(back, request("k"));
        assert_eq!(consumed, frame.len());
    }

    #[test]
    fn encode_refuses_oversized() {
        let big = "x".repeat(100);
        let err = encode_frame(&big, 50).unwrap_err();
        // 1 version byte + 1 varint length byte + 100 bytes.
        assert_eq!(err, CodecError::Oversized { len: 102, max: 50 });
        assert!(err.to_string().contains("102"));
    }

    #[test]
    fn encode_refuses_what_postcard_cannot_express() {
        struct UnknownLength;
        impl Serialize for UnknownLength {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                s.serialize_seq(None)?.end()
            }
        }
        let err = encode_frame(&UnknownLength, MAX).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(ref m) if m.starts_with("cannot encode")), "{err:?}");
    }

    #[test]
    fn oversized_is_seen_from_the_header_alone() {
        let header = 1_000_000u32.to_be_bytes();
        let err = decode_frame::<Msg>(&header, MAX).unwrap_err();
        assert_eq!(err, CodecError::Oversized { len: 1_000_000, max: MAX });
    }

    #[test]
    fn zero_length_is_empty() {
        assert_eq!(decode_frame::<u8>(&[0, 0, 0, 0], MAX).unwrap_err(), CodecError::Empty);
    }

    #[test]
    fn bad_version_is_seen_before_the_body() {
        let err = decode_frame::<Msg>(&[0, 0, 0, 50, WIRE_VERSION + 1], MAX).unwrap_err();
        assert_eq!(err, CodecError::BadVersion { got: WIRE_VERSION + 1, expected: WIRE_VERSION });
        assert!(err.to_string().contains("same Roster version"));
    }

    #[test]
    fn malformed_body_and_trailing_bytes() {
        // A bool must be 0 or 1.
        let err = decode_frame::<bool>(&[0, 0, 0, 2, WIRE_VERSION, 9], MAX).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{err:?}");
        let err = decode_frame::<u8>(&[0, 0, 0, 3, WIRE_VERSION, 9, 9], MAX).unwrap_err();
        assert_eq!(err, CodecError::Malformed("1 trailing bytes after the message in a 3-byte frame".to_string()));
        // Body shorter than the message needs.
        let err = decode_frame::<u64>(&[0, 0, 0, 2, WIRE_VERSION, 0xFF], MAX).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn check_eof_reports_truncation() {
        let frame = encode_frame(&request("key"), MAX).unwrap();
        assert_eq!(check_eof(&frame[..2]), Err(CodecError::Truncated { have: 2, need: 4 }));
        assert_eq!(check_eof(&frame[..6]), Err(CodecError::Truncated { have: 6, need: frame.len() }));
        assert!(matches!(check_eof(&frame), Err(CodecError::Malformed(_))));
        assert_eq!(frame_len(&frame), Some(frame.len()));
        assert_eq!(frame_len(&frame[..frame.len() - 1]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trip(m in msg()) {
            let frame = encode_frame(&m, MAX).unwrap();
            let (back, consumed) = decode_frame::<Msg>(&frame, MAX).unwrap().unwrap();
            prop_assert_eq!(back, m);
            prop_assert_eq!(consumed, frame.len());
        }

        /// A stream of frames arriving in arbitrary chunks decodes to the same messages.
        #[test]
        fn stream_in_chunks(msgs in proptest::collection::vec(msg(), 0..5),
                            cuts in proptest::collection::vec(1usize..40, 0..40)) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend(encode_frame(m, MAX).unwrap());
            }
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut cuts = cuts.into_iter();
            while pos < wire.len() {
                let step = cuts.next().unwrap_or(wire.len());
                let end = (pos + step).min(wire.len());
                buf.extend_from_slice(&wire[pos..end]);
                pos = end;
                while let Some((m, used)) = decode_frame::<Msg>(&buf, MAX).unwrap() {
                    got.push(m);
                    buf.drain(..used);
                }
            }
            prop_assert_eq!(check_eof(&buf), Ok(()));
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn every_truncation_needs_more(m in msg()) {
            let frame = encode_frame(&m, MAX).unwrap();
            for cut in 0..frame.len() {
                prop_assert_eq!(decode_frame::<Msg>(&frame[..cut], MAX).unwrap(), None);
                if cut > 0 {
                    let truncated = matches!(check_eof(&frame[..cut]), Err(CodecError::Truncated { .. }));
                    prop_assert!(truncated);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame::<Msg>(&bytes, MAX);
            let _ = decode_frame::<Request>(&bytes, MAX);
            let _ = check_eof(&bytes);
            let _ = frame_len(&bytes);
        }

        /// Arbitrary bodies behind a valid header reach postcard itself.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
            frame.push(WIRE_VERSION);
            frame.extend(&body);
            let _ = decode_frame::<Msg>(&frame, MAX);
            let _ = decode_frame::<Request>(&frame, MAX);
        }

        #[test]
        fn bit_flips_never_panic(m in msg(), flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)) {
            let mut frame = encode_frame(&m, MAX).unwrap();
            for (at, bit) in flips {
                let i = at.index(frame.len());
                frame[i] ^= 1 << bit;
            }
            let _ = decode_frame::<Msg>(&frame, MAX);
            let _ = check_eof(&frame);
        }
    }
}
