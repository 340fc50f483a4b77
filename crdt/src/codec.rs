//! The binary envelope of everything this crate sends or stores: one format-version byte,
//! one kind byte, then a `postcard` body (serde, varint integers, no field names).
//!
//! Why so: the version byte lets a later format be told apart instead of misread; the kind
//! byte stops a delta from being decoded as a state; postcard is compact (a counter entry
//! is a few bytes) and stable (its wire format is specified and frozen at 1.0).
//! Versions are per kind ([`Kind::version`]): a kind whose body changes writes the next
//! version, and its owner keeps decoding the older ones it lists (stored snapshots outlive
//! builds). Every other kind keeps its bytes.
//! Decoding is bounded: input longer than the caller's cap is refused before it is parsed,
//! sequence lengths read from the input only pre-allocate through serde's cautious size
//! hint (at most 1 MiB), and every error is a [`DecodeError`], never a panic. Decoded
//! values are then validated by their owner (see each type's `decode`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The first format version, still written by every kind whose body never changed.
pub const FORMAT_VERSION: u8 = 1;

/// What an encoding holds; written second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    LedgerState = 1,
    LedgerDelta = 2,
    VersionVector = 3,
    BoundedCounter = 4,
    EscrowBook = 5,
    DirectoryState = 6,
    DirectoryDelta = 7,
    DirectorySync = 8,
    Settlement = 9,
}

impl Kind {
    /// The format version this build writes for the kind, written first. Version 2 of the
    /// escrow kinds added the refund cells of bounded counters; they still decode version
    /// 1 (see `crate::escrow`).
    pub const fn version(self) -> u8 {
        match self {
            // Version 2 of the ledger's state added its settlements (`crate::settlement`);
            // version 1 still decodes, as a ledger with none.
            Kind::BoundedCounter | Kind::EscrowBook => 2,
            Kind::LedgerState => 3,
            _ => FORMAT_VERSION,
        }
    }
}

/// Why bytes could not be decoded. Every variant is a refusal of the input; none is a bug.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("input of {bytes} bytes exceeds the cap of {bytes_max} bytes")]
    TooLarge { bytes: usize, bytes_max: usize },
    #[error("input is shorter than the two-byte header")]
    Truncated,
    #[error("unknown format version {0} for this kind")]
    Version(u8),
    #[error("expected a {expected:?} encoding, found kind byte {found}")]
    Kind { expected: Kind, found: u8 },
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
    #[error("decoded value is invalid: {0}")]
    Invalid(String),
}

/// Encodes `value` with the envelope for `kind`.
pub(crate) fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    let mut bytes = vec![kind.version(), kind as u8];
    // Postcard fails only on sequences of unknown length or unsupported types; every type
    // of this crate is plain structs, enums, integers and sized collections, so a failure
    // is a programming error.
    let body = postcard::to_allocvec(value).expect("postcard serialises every type of this crate");
    bytes.extend_from_slice(&body);
    bytes
}

/// Writes exactly what [`encode`] returns into `out`, without building it (a digest hashes
/// encodings on the request path).
pub(crate) fn encode_into<T: Serialize, W: Extend<u8>>(kind: Kind, value: &T, mut out: W) -> W {
    out.extend([kind.version(), kind as u8]);
    postcard::to_extend(value, out).expect("postcard serialises every type of this crate")
}

/// Decodes a value of `kind` from `bytes`, refusing more than `bytes_max` bytes.
pub(crate) fn decode<T: DeserializeOwned>(
    kind: Kind,
    bytes: &[u8],
    bytes_max: usize,
) -> Result<T, DecodeError> {
    parse(open(kind, bytes, bytes_max)?)
}

/// Decodes a whole body (after [`open`] or [`open_versioned`]).
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Checks the size cap and the envelope of a `kind` encoding of the current version and
/// returns its body, for owners that parse the body piece by piece.
pub(crate) fn open(kind: Kind, bytes: &[u8], bytes_max: usize) -> Result<&[u8], DecodeError> {
    open_versioned(kind, bytes, bytes_max, kind.version()).map(|(_, body)| body)
}

/// [`open`] for an owner that still reads versions from `oldest` on: returns the version
/// found with the body.
pub(crate) fn open_versioned(
    kind: Kind,
    bytes: &[u8],
    bytes_max: usize,
    oldest: u8,
) -> Result<(u8, &[u8]), DecodeError> {
    if bytes.len() > bytes_max {
        return Err(DecodeError::TooLarge {
            bytes: bytes.len(),
            bytes_max,
        });
    }
    let [version, found, body @ ..] = bytes else {
        return Err(DecodeError::Truncated);
    };
    if !(oldest..=kind.version()).contains(version) {
        return Err(DecodeError::Version(*version));
    }
    if *found != kind as u8 {
        return Err(DecodeError::Kind {
            expected: kind,
            found: *found,
        });
    }
    Ok((*version, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_checked_before_the_body() {
        let bytes = encode(Kind::VersionVector, &vec![1u64, 2]);
        assert_eq!(&bytes[..2], &[FORMAT_VERSION, Kind::VersionVector as u8]);
        assert_eq!(
            decode::<Vec<u64>>(Kind::VersionVector, &bytes, 64),
            Ok(vec![1, 2])
        );
        assert_eq!(
            decode::<Vec<u64>>(Kind::VersionVector, &bytes, 3),
            Err(DecodeError::TooLarge {
                bytes: bytes.len(),
                bytes_max: 3
            })
        );
        assert_eq!(
            decode::<Vec<u64>>(Kind::VersionVector, &[FORMAT_VERSION], 64),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode::<Vec<u64>>(Kind::VersionVector, &[9, 3, 0], 64),
            Err(DecodeError::Version(9))
        );
        assert!(matches!(
            decode::<Vec<u64>>(Kind::LedgerDelta, &bytes, 64),
            Err(DecodeError::Kind { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode::<Vec<u64>>(Kind::VersionVector, &trailing, 64),
            Err(DecodeError::Trailing(1))
        );
    }

    #[test]
    fn versions_are_per_kind_and_older_ones_only_where_the_owner_asks() {
        let v2 = encode(Kind::BoundedCounter, &7u64);
        assert_eq!(&v2[..2], &[2, Kind::BoundedCounter as u8]);
        let mut v1 = v2.clone();
        v1[0] = 1;
        let counter = Kind::BoundedCounter;
        assert_eq!(open(counter, &v2, 64), Ok(&v2[2..]));
        assert_eq!(open(counter, &v1, 64), Err(DecodeError::Version(1)));
        assert_eq!(open_versioned(counter, &v1, 64, 1), Ok((1, &v1[2..])));
        assert_eq!(open_versioned(counter, &v2, 64, 1), Ok((2, &v2[2..])));
        let mut v3 = v2.clone();
        v3[0] = 3;
        assert_eq!(
            open_versioned(counter, &v3, 64, 1),
            Err(DecodeError::Version(3))
        );
        // A kind whose body never changed neither writes nor reads version 2.
        let mut vv = encode(Kind::VersionVector, &vec![1u64]);
        assert_eq!(vv[0], FORMAT_VERSION);
        vv[0] = 2;
        assert_eq!(
            decode::<Vec<u64>>(Kind::VersionVector, &vv, 64),
            Err(DecodeError::Version(2))
        );
    }

    #[test]
    fn a_huge_declared_length_is_refused_without_allocating_it() {
        // Declares 2^35 elements in six bytes: must fail on the missing data, not allocate.
        let bytes = [
            FORMAT_VERSION,
            Kind::VersionVector as u8,
            0xff,
            0xff,
            0xff,
            0xff,
            0x7f,
        ];
        assert!(matches!(
            decode::<Vec<u64>>(Kind::VersionVector, &bytes, 64),
            Err(DecodeError::Malformed(_))
        ));
    }
}
