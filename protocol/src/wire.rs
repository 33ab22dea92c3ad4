//! The wire encoding: bincode with a fixed configuration, a size limit checked before anything is
//! allocated, trailing bytes rejected, and a canonical form (one value, one encoding).
//!
//! Every byte string that crosses the network is decoded here and nowhere else, so the encoding can
//! be swapped in one place. It never panics on input: everything it is handed may be hostile.

use bincode::{Decode, Encode, config};

/// The largest message a peer accepts, in bytes. Larger ones are dropped before decoding.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

type Config =
    config::Configuration<config::LittleEndian, config::Varint, config::Limit<MAX_MESSAGE_BYTES>>;

fn config() -> Config {
    config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Why bytes from the network were not accepted. Every variant is counted by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes is over the {max} byte limit")]
    Oversize {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid encoding (truncated, unknown variant, bad UTF-8, …).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A valid value was followed by more bytes.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A signed value was not in its one canonical encoding.
    #[error("signed bytes are not in canonical form")]
    NonCanonical,
    /// A signature did not verify.
    #[error("bad signature")]
    BadSignature,
    /// A record's seal does not cover it, or its signature does not verify.
    #[error("bad record seal: {0}")]
    BadSeal(&'static str),
    /// A task's id is not the hash of its spec.
    #[error("task id does not match its spec")]
    IdMismatch,
    /// The message is well formed but its sender may not say it (for example a lease granted by
    /// someone other than the sender, or to someone other than us).
    #[error("not allowed: {0}")]
    Unauthorized(&'static str),
}

/// Encodes a value. Encoding a derived type into memory cannot fail.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    #[allow(clippy::expect_used)] // only a hand-written Encode impl could fail; there are none
    bincode::encode_to_vec(value, config()).expect("encoding into a Vec cannot fail")
}

/// Decodes exactly one value from `bytes`: the length is checked first, and trailing bytes are
/// an error.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::Oversize {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let (value, read) = bincode::decode_from_slice(bytes, config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(WireError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

/// Decodes `bytes` and checks that they are the canonical encoding of the value, so that a hash
/// or signature over them names exactly one value.
pub fn decode_canonical<T: Decode<()> + Encode>(bytes: &[u8]) -> Result<T, WireError> {
    let value: T = decode(bytes)?;
    if encode(&value) != bytes {
        return Err(WireError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = encode(&(1u32, String::from("x")));
        bytes.push(0);
        assert_eq!(
            decode::<(u32, String)>(&bytes),
            Err(WireError::TrailingBytes(1))
        );
    }

    #[test]
    fn rejects_truncation() {
        let bytes = encode(&(1u32, String::from("hello")));
        let err = decode::<(u32, String)>(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(err, WireError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn rejects_oversize_before_decoding() {
        let bytes = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<Vec<u8>>(&bytes),
            Err(WireError::Oversize { .. })
        ));
    }

    #[test]
    fn rejects_a_length_prefix_larger_than_the_limit() {
        // A vector claiming 2^40 elements must not make the decoder allocate.
        let bytes = [0xfd, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }

    #[test]
    fn rejects_non_minimal_varints() {
        // 5 encoded as a 2-byte varint (0xfb + u16) instead of a single byte.
        let bytes = [0xfb, 5, 0];
        assert_eq!(decode::<u32>(&bytes).ok(), Some(5));
        assert_eq!(
            decode_canonical::<u32>(&bytes),
            Err(WireError::NonCanonical)
        );
    }
}
