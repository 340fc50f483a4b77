//! Credentials: tenant API keys, operator tokens, and the checks the request path makes
//! against the local directory replica (no remote call).
//!
//! An API key reads `tsk_<prefix>_<secret>`: the prefix (12 hex digits) is public and
//! indexed by the directory, the secret (32 hex digits, 128 random bits) is shown once at
//! creation and never stored; the directory keeps SHA-256 of the whole key. A request's
//! key is looked up by prefix (one hash probe) and its digest compared in constant time
//! (`subtle`), so timing does not tell how much of a guess was right. A fast hash is
//! enough because the secret is random and long (nothing to brute-force, unlike a
//! password).
//!
//! Operator tokens (`top_<64 hex>`) guard the admin API; config and store hold only their
//! SHA-256 digests.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tessera_crdt::directory::{Directory, KeyId, KeyStanding, Scopes};
use tessera_crdt::TenantId;

use crate::http::error::{ApiError, ErrorCode};

pub const KEY_PREFIX: &str = "tsk_";
pub const TOKEN_PREFIX: &str = "top_";
const PREFIX_HEX: usize = 12;
const SECRET_HEX: usize = 32;

/// Random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// 64 hex digits → 32 bytes.
pub fn parse_digest(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A newly minted API key: the whole key (shown once), its prefix and its digest.
pub struct NewKey {
    pub key: String,
    pub prefix: String,
    pub secret_hash: [u8; 32],
}

pub fn new_key() -> NewKey {
    let prefix = hex(&random_bytes::<{ PREFIX_HEX / 2 }>());
    let secret = hex(&random_bytes::<{ SECRET_HEX / 2 }>());
    let key = format!("{KEY_PREFIX}{prefix}_{secret}");
    NewKey {
        secret_hash: sha256(key.as_bytes()),
        key,
        prefix,
    }
}

/// A newly minted operator token and its digest (hex).
pub fn new_operator_token() -> (String, String) {
    let token = format!("{TOKEN_PREFIX}{}", hex(&random_bytes::<32>()));
    let digest = hex(&sha256(token.as_bytes()));
    (token, digest)
}

/// The prefix of a well-formed key, or `None`.
fn key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (prefix.len() == PREFIX_HEX
        && secret.len() == SECRET_HEX
        && lower_hex(prefix)
        && lower_hex(secret))
    .then_some(prefix)
}

/// The bearer credential of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, ApiError> {
    let value = header.ok_or_else(|| {
        ApiError::unauthorized(ErrorCode::MissingKey, "send `Authorization: Bearer <key>`")
    })?;
    let (scheme, credential) = value.trim().split_once(' ').ok_or_else(|| {
        ApiError::unauthorized(
            ErrorCode::MalformedKey,
            "the Authorization header must be `Bearer <key>`",
        )
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(ApiError::unauthorized(
            ErrorCode::MalformedKey,
            "the Authorization header must be `Bearer <key>`",
        ));
    }
    Ok(credential.trim())
}

/// Who a valid key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub key: KeyId,
}

/// A presented tenant key, parsed and hashed: the work that needs no lock, done before
/// the directory is looked at.
#[derive(Clone, Copy, Debug)]
pub struct Presented<'a> {
    prefix: &'a str,
    digest: [u8; 32],
}

/// Parses a tenant key (`tsk_<prefix>_<secret>`) and hashes it.
pub fn present(key: &str) -> Result<Presented<'_>, ApiError> {
    let prefix = key_prefix(key).ok_or_else(|| {
        ApiError::unauthorized(
            ErrorCode::MalformedKey,
            "the key is not a Tessera API key (tsk_…)",
        )
    })?;
    Ok(Presented {
        prefix,
        digest: sha256(key.as_bytes()),
    })
}

/// Checks a tenant key against the directory: well formed, known, digest equal (in
/// constant time), usable, holding `scope`.
pub fn check_key(directory: &Directory, key: &str, scope: Scopes) -> Result<Caller, ApiError> {
    check_presented(directory, &present(key)?, scope)
}

/// [`check_key`] for a key already parsed and hashed (so the caller can do that before
/// taking the lock the directory lives under).
pub fn check_presented(
    directory: &Directory,
    presented: &Presented<'_>,
    scope: Scopes,
) -> Result<Caller, ApiError> {
    let (prefix, digest) = (presented.prefix, presented.digest);
    let found = directory
        .lookup_key(prefix)
        .find(|m| bool::from(m.secret_hash.ct_eq(&digest)));
    let Some(found) = found else {
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidKey,
            "the key is not valid",
        ));
    };
    match found.standing {
        KeyStanding::Usable => {}
        KeyStanding::Revoked => {
            return Err(ApiError::unauthorized(
                ErrorCode::KeyRevoked,
                "the key was revoked",
            ))
        }
        KeyStanding::TenantSuspended => {
            return Err(ApiError::forbidden(
                ErrorCode::TenantSuspended,
                "the tenant is suspended",
            ))
        }
        KeyStanding::TenantDeleted => {
            return Err(ApiError::unauthorized(
                ErrorCode::TenantDeleted,
                "the tenant was deleted",
            ))
        }
        KeyStanding::TenantUnknown => {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidKey,
                "the key is not valid",
            ))
        }
    }
    if !found.scopes.contains(scope) {
        return Err(ApiError::forbidden(
            ErrorCode::InsufficientScope,
            "the key does not have the scope this operation needs",
        ));
    }
    Ok(Caller {
        tenant: found.tenant,
        key: found.key,
    })
}

/// Whether `token` is one of the operator tokens whose digests are `digests`. Every digest
/// is compared, in constant time.
pub fn is_operator(digests: &[[u8; 32]], token: &str) -> bool {
    let digest = sha256(token.as_bytes());
    digests
        .iter()
        .fold(false, |found, d| found | bool::from(d.ct_eq(&digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_malformed_ones_do_not() {
        let key = new_key();
        assert_eq!(key_prefix(&key.key), Some(key.prefix.as_str()));
        assert_eq!(key.secret_hash, sha256(key.key.as_bytes()));
        for bad in [
            "",
            "tsk_",
            "tsk_abc_def",
            "xyz_0123456789ab_0123456789abcdef0123456789abcdef",
            "tsk_0123456789AB_0123456789abcdef0123456789abcdef",
            "tsk_0123456789ab_0123456789abcdef0123456789abcde",
            "tsk_0123456789ab_0123456789abcdef0123456789abcdef_",
        ] {
            assert_eq!(key_prefix(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bearer_header_shapes() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        assert!(bearer(None).is_err());
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer")).is_err());
        assert!(bearer(Some("Bearer ")).is_err());
    }

    #[test]
    fn operator_tokens_match_by_digest() {
        let (token, digest) = new_operator_token();
        let digests = [parse_digest(&digest).unwrap()];
        assert!(is_operator(&digests, &token));
        assert!(!is_operator(&digests, "top_00"));
        assert!(!is_operator(&[], &token));
    }

    #[test]
    fn digests_parse() {
        assert_eq!(parse_digest(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_digest(&"ab".repeat(31)), None);
        assert_eq!(parse_digest(&"zz".repeat(32)), None);
    }
}
