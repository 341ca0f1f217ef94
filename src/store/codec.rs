//! Record codec: one version byte, then bincode.
//!
//! Every value written to sled goes through here so that a record written by an older build can
//! be recognised (and migrated or refused with a clear error) instead of being misread. bincode
//! 1.3 is the format the project's user chose; it is complete and unmaintained, so it stays
//! behind this one module and can be swapped without touching the trees.

use serde::{de::DeserializeOwned, Serialize};

/// The schema version written in front of every record.
pub const RECORD_VERSION: u8 = 1;

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record is empty or was written by a schema this build does not know.
    #[error("record has schema version {found}, this build reads {RECORD_VERSION}")]
    Version {
        /// The version found.
        found: u8,
    },
    /// The bytes do not decode as the expected type.
    #[error("record does not decode: {0}")]
    Decode(String),
    /// The value could not be encoded (never expected for our plain structs).
    #[error("record does not encode: {0}")]
    Encode(String),
}

/// Encodes `value` as version byte + bincode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_versioned(RECORD_VERSION, value)
}

/// Encodes `value` behind an explicit version byte: for a record type whose layout moved on
/// from [`RECORD_VERSION`] (it then decodes its older layouts itself, see [`split`]).
pub fn encode_versioned<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![version];
    bincode::serialize_into(&mut out, value).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// A record's version byte and its body, for types that read more than one layout.
pub fn split(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    match bytes.split_first() {
        Some((&version, body)) => Ok((version, body)),
        None => Err(CodecError::Version { found: 0 }),
    }
}

/// Decodes a record body (after [`split`]).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    bincode::deserialize(body).map_err(|e| CodecError::Decode(e.to_string()))
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match split(bytes)? {
        (RECORD_VERSION, body) => decode_body(body),
        (found, _) => Err(CodecError::Version { found }),
    }
}

/// Encodes `value` with no version byte in front: for a container that carries its own
/// version (the backup file, see [`super::backup`]).
pub fn encode_bare<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serialize(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes bytes written by [`encode_bare`], allocating at most their own length: a damaged
/// length prefix is refused instead of asking for gigabytes.
pub fn decode_bare<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| CodecError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Sample {
        name: String,
        count: u32,
    }

    #[test]
    fn round_trips_and_carries_the_version() {
        let s = Sample {
            name: "alice".into(),
            count: 7,
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        let mut bytes = encode(&Sample {
            name: "a".into(),
            count: 1,
        })
        .unwrap();
        bytes[0] = 9;
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(CodecError::Version { found: 9 })
        ));
        assert!(decode::<Sample>(&[]).is_err());
        assert!(decode::<Sample>(&[RECORD_VERSION, 1]).is_err());
    }
}
