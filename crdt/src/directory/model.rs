//! The directory's vocabulary: identities, scopes, stamps, the [`Change`]s an admin can
//! make (to one tenant, or to the cluster: [`Change::DecommissionNode`]), the [`Op`] that
//! records one in the log, field [`limits`], and the errors.
//!
//! Everything here is plain data with serde derives, because ops are what replicas store
//! and exchange; the variant order of every enum is its encoding, so variants are only
//! ever appended. Validation lives next to the data ([`Change::validate`]) so that local
//! edits and ops from peers pass the same checks.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{Metric, NodeId, TenantId};
use crate::period::PeriodKind;

/// Identity of an API key, chosen by the node that creates it (at random).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(pub u64);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Identity of a URL-signing secret within its tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SecretId(pub u64);

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What an API key may do: a small bit set.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Scopes(u8);

impl Scopes {
    /// Convert images (`POST /v1/resize`).
    pub const RESIZE: Scopes = Scopes(1);
    /// Read the tenant's own usage.
    pub const USAGE: Scopes = Scopes(2);
    pub(crate) const KNOWN: u8 = 0b11;
    const NAMES: [(&'static str, Scopes); 2] = [("resize", Self::RESIZE), ("usage", Self::USAGE)];

    pub const fn empty() -> Scopes {
        Scopes(0)
    }

    pub const fn union(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    /// Whether every scope of `other` is in `self`.
    pub const fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses a comma-separated list such as `resize,usage`.
    pub fn parse(text: &str) -> Result<Scopes, DirectoryError> {
        let mut scopes = Scopes::empty();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let (_, scope) = Self::NAMES
                .iter()
                .find(|(known, _)| *known == name)
                .ok_or_else(|| DirectoryError::UnknownScope(name.to_owned()))?;
            scopes = scopes.union(*scope);
        }
        Ok(scopes)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(_, scope)| self.contains(*scope))
            .map(|(name, _)| *name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// The total order of ops: Lamport time, then origin. Unique per op, because an origin's
/// Lamport times strictly increase.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    pub lamport: u64,
    pub origin: NodeId,
}

/// Whether a tenant is served. Deletion is separate and final (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TenantStatus {
    #[default]
    Active,
    Suspended,
}

/// One admin edit. The variant order is the encoding: new variants are only appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Creates a tenant; `home` is the node that turns its quota policy into escrow grants.
    CreateTenant {
        tenant: TenantId,
        name: String,
        home: NodeId,
    },
    RenameTenant {
        tenant: TenantId,
        name: String,
    },
    SetTenantStatus {
        tenant: TenantId,
        status: TenantStatus,
    },
    /// Moves the home role (for example when the home node is retired).
    SetHome {
        tenant: TenantId,
        home: NodeId,
    },
    /// Final: the tenant's keys stop working and it cannot be revived.
    DeleteTenant {
        tenant: TenantId,
    },
    /// `prefix` is the key's public part (looked up); `secret_hash` is a hash of the whole
    /// key computed by the caller. The secret itself is never stored.
    CreateKey {
        tenant: TenantId,
        key: KeyId,
        prefix: String,
        secret_hash: [u8; 32],
        scopes: Scopes,
        label: String,
    },
    SetKeyScopes {
        tenant: TenantId,
        key: KeyId,
        scopes: Scopes,
    },
    SetKeyLabel {
        tenant: TenantId,
        key: KeyId,
        label: String,
    },
    /// Final: see the module doc.
    RevokeKey {
        tenant: TenantId,
        key: KeyId,
    },
    /// A URL-signing secret. Unlike API keys it must be kept (HMAC verification needs it);
    /// it travels only between cluster nodes and is redacted from every display.
    AddSigningSecret {
        tenant: TenantId,
        secret_id: SecretId,
        secret: Vec<u8>,
    },
    SetPrimarySecret {
        tenant: TenantId,
        secret_id: SecretId,
    },
    /// Final for that secret.
    RetireSigningSecret {
        tenant: TenantId,
        secret_id: SecretId,
    },
    /// Allows (or disallows) a source origin such as `https://images.example.com`.
    SetOrigin {
        tenant: TenantId,
        origin: String,
        allowed: bool,
    },
    /// A hard quota per metric and period kind; `None` removes it (unlimited).
    SetQuota {
        tenant: TenantId,
        metric: Metric,
        period: PeriodKind,
        limit: Option<u64>,
    },
    /// A named set of resize options (a query string, validated by the edge); `None`
    /// removes it.
    SetPreset {
        tenant: TenantId,
        name: String,
        options: Option<String>,
    },
    /// Final, and cluster-scoped (it concerns no tenant): `node` is gone for good — dead,
    /// its data lost — and is no member any more. It stops counting as stale, consumes no
    /// quota rights, and the rights stranded with it are recovered by the homes of the
    /// quotas (the rule is in docs/PROTOCOL.md). Ids are never reused, so nothing can
    /// bring it back; a node cannot decommission itself (it leaves instead).
    DecommissionNode {
        node: NodeId,
    },
    /// A placeholder for one compacted op, as the first version of compaction wrote it
    /// (still read: logs and stores may hold it; `CompactedRun` replaced it). It changes
    /// nothing when applied. Never an edit.
    Compacted,
    /// What a run of ops becomes once compacted (see "Compaction" in the directory's module
    /// doc): each changed registers that later ops have overwritten since, and each is
    /// older than the audit window. The op stands for its origin's ops `seq..=through_seq`
    /// (its Lamport time and time are the last one's), so every log stays a complete
    /// prefix; it changes nothing when applied. Never an edit. A variant of its own (not a
    /// field added to `Compacted`), so what the first version wrote still decodes.
    CompactedRun {
        through_seq: u64,
    },
    /// The tenant's watermark image (a file the edge has decoded and checked: at most
    /// [`limits::WATERMARK_BYTES_MAX`] bytes); `None` removes it. Every node holds it, so it
    /// is small, and an overwritten one is compacted away like any register's old value.
    SetWatermark {
        tenant: TenantId,
        image: Option<Vec<u8>>,
    },
}

/// Size bounds on every field an op carries, checked on local edits and on every op a peer
/// sends, so a hostile or corrupted op cannot grow the directory without bound.
pub mod limits {
    pub const NAME_BYTES_MAX: usize = 200;
    pub const ACTOR_BYTES_MAX: usize = 128;
    pub const KEY_PREFIX_BYTES_MIN: usize = 4;
    pub const KEY_PREFIX_BYTES_MAX: usize = 32;
    pub const LABEL_BYTES_MAX: usize = 200;
    pub const SIGNING_SECRET_BYTES_MIN: usize = 16;
    pub const SIGNING_SECRET_BYTES_MAX: usize = 128;
    pub const ORIGIN_BYTES_MAX: usize = 512;
    pub const PRESET_NAME_BYTES_MAX: usize = 64;
    pub const PRESET_OPTIONS_BYTES_MAX: usize = 1024;
    /// A watermark file: a logo of a few KiB. Every node holds every tenant's.
    pub const WATERMARK_BYTES_MAX: usize = 16 << 10;
    /// Lamport times above this are refused, so `lamport + 1` never overflows and a single
    /// hostile op cannot exhaust the clock.
    pub const LAMPORT_MAX: u64 = 1 << 62;
}

impl Change {
    /// The tenant this change concerns: every change concerns exactly one, but the
    /// cluster-scoped ones ([`Change::DecommissionNode`]), which concern none.
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            Change::CreateTenant { tenant, .. }
            | Change::RenameTenant { tenant, .. }
            | Change::SetTenantStatus { tenant, .. }
            | Change::SetHome { tenant, .. }
            | Change::DeleteTenant { tenant }
            | Change::CreateKey { tenant, .. }
            | Change::SetKeyScopes { tenant, .. }
            | Change::SetKeyLabel { tenant, .. }
            | Change::RevokeKey { tenant, .. }
            | Change::AddSigningSecret { tenant, .. }
            | Change::SetPrimarySecret { tenant, .. }
            | Change::RetireSigningSecret { tenant, .. }
            | Change::SetOrigin { tenant, .. }
            | Change::SetQuota { tenant, .. }
            | Change::SetPreset { tenant, .. }
            | Change::SetWatermark { tenant, .. } => Some(*tenant),
            Change::DecommissionNode { .. } | Change::Compacted | Change::CompactedRun { .. } => {
                None
            }
        }
    }

    /// Checks every field against [`limits`].
    pub fn validate(&self) -> Result<(), DirectoryError> {
        use limits::*;
        fn text(
            field: &'static str,
            value: &str,
            min: usize,
            max: usize,
        ) -> Result<(), DirectoryError> {
            if value.len() < min || value.len() > max || value.chars().any(char::is_control) {
                return Err(DirectoryError::InvalidField {
                    field,
                    reason: format!("must be {min}..={max} bytes without control characters"),
                });
            }
            Ok(())
        }
        fn scopes(value: Scopes) -> Result<(), DirectoryError> {
            if value.0 & !Scopes::KNOWN != 0 {
                return Err(DirectoryError::InvalidField {
                    field: "scopes",
                    reason: format!("unknown scope bits {:#04x}", value.0),
                });
            }
            Ok(())
        }
        match self {
            Change::CreateTenant { name, .. } | Change::RenameTenant { name, .. } => {
                text("name", name, 1, NAME_BYTES_MAX)
            }
            Change::CreateKey {
                prefix,
                scopes: s,
                label,
                ..
            } => {
                text("prefix", prefix, KEY_PREFIX_BYTES_MIN, KEY_PREFIX_BYTES_MAX)?;
                if !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(DirectoryError::InvalidField {
                        field: "prefix",
                        reason: "must be ASCII letters, digits, '_' or '-'".into(),
                    });
                }
                text("label", label, 0, LABEL_BYTES_MAX)?;
                scopes(*s)
            }
            Change::SetKeyScopes { scopes: s, .. } => scopes(*s),
            Change::SetKeyLabel { label, .. } => text("label", label, 0, LABEL_BYTES_MAX),
            Change::AddSigningSecret { secret, .. } => {
                if !(SIGNING_SECRET_BYTES_MIN..=SIGNING_SECRET_BYTES_MAX).contains(&secret.len()) {
                    return Err(DirectoryError::InvalidField {
                        field: "secret",
                        reason: format!(
                            "must be {SIGNING_SECRET_BYTES_MIN}..={SIGNING_SECRET_BYTES_MAX} bytes"
                        ),
                    });
                }
                Ok(())
            }
            Change::SetOrigin { origin, .. } => text("origin", origin, 1, ORIGIN_BYTES_MAX),
            Change::SetPreset { name, options, .. } => {
                text("preset name", name, 1, PRESET_NAME_BYTES_MAX)?;
                match options {
                    Some(options) => text("preset options", options, 0, PRESET_OPTIONS_BYTES_MAX),
                    None => Ok(()),
                }
            }
            Change::SetWatermark {
                image: Some(image), ..
            } if image.is_empty() || image.len() > WATERMARK_BYTES_MAX => {
                Err(DirectoryError::InvalidField {
                    field: "watermark",
                    reason: format!("must be 1..={WATERMARK_BYTES_MAX} bytes"),
                })
            }
            Change::SetWatermark { .. } => Ok(()),
            Change::DecommissionNode { node } => {
                // `NodeId`'s default (the home of a tenant whose creation has not arrived),
                // not a member's id: an op naming it is a mistake or garbage.
                if node.0 == 0 {
                    return Err(DirectoryError::InvalidField {
                        field: "node",
                        reason: "0 is not a node id".into(),
                    });
                }
                Ok(())
            }
            Change::Compacted | Change::CompactedRun { .. } => Ok(()),
            Change::SetTenantStatus { .. }
            | Change::SetHome { .. }
            | Change::DeleteTenant { .. }
            | Change::RevokeKey { .. }
            | Change::SetPrimarySecret { .. }
            | Change::RetireSigningSecret { .. }
            | Change::SetQuota { .. } => Ok(()),
        }
    }
}

/// A human description for audit listings; signing secrets and key hashes are redacted.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateTenant { tenant, name, home } => {
                write!(f, "create tenant {tenant} {name:?} (home node {home})")
            }
            Change::RenameTenant { tenant, name } => {
                write!(f, "rename tenant {tenant} to {name:?}")
            }
            Change::SetTenantStatus { tenant, status } => {
                write!(f, "set tenant {tenant} status to {status:?}")
            }
            Change::SetHome { tenant, home } => {
                write!(f, "move tenant {tenant} home to node {home}")
            }
            Change::DeleteTenant { tenant } => write!(f, "delete tenant {tenant}"),
            Change::CreateKey {
                tenant,
                key,
                prefix,
                scopes,
                label,
                ..
            } => write!(
                f,
                "create key {key} ({prefix}, scopes {scopes}, label {label:?}) for tenant {tenant}"
            ),
            Change::SetKeyScopes {
                tenant,
                key,
                scopes,
            } => {
                write!(f, "set scopes of key {key} of tenant {tenant} to {scopes}")
            }
            Change::SetKeyLabel { tenant, key, label } => {
                write!(f, "set label of key {key} of tenant {tenant} to {label:?}")
            }
            Change::RevokeKey { tenant, key } => write!(f, "revoke key {key} of tenant {tenant}"),
            Change::AddSigningSecret {
                tenant,
                secret_id,
                secret,
            } => write!(
                f,
                "add signing secret {secret_id} ({} bytes, redacted) to tenant {tenant}",
                secret.len()
            ),
            Change::SetPrimarySecret { tenant, secret_id } => {
                write!(
                    f,
                    "make signing secret {secret_id} primary for tenant {tenant}"
                )
            }
            Change::RetireSigningSecret { tenant, secret_id } => {
                write!(f, "retire signing secret {secret_id} of tenant {tenant}")
            }
            Change::SetOrigin {
                tenant,
                origin,
                allowed,
            } => {
                let verb = if *allowed { "allow" } else { "disallow" };
                write!(f, "{verb} origin {origin:?} for tenant {tenant}")
            }
            Change::SetQuota {
                tenant,
                metric,
                period,
                limit,
            } => match limit {
                Some(limit) => write!(
                    f,
                    "set {period:?} quota of {metric} to {limit} for tenant {tenant}"
                ),
                None => write!(f, "remove {period:?} quota of {metric} for tenant {tenant}"),
            },
            Change::SetPreset {
                tenant,
                name,
                options,
            } => match options {
                Some(options) => {
                    write!(f, "set preset {name:?} to {options:?} for tenant {tenant}")
                }
                None => write!(f, "remove preset {name:?} of tenant {tenant}"),
            },
            Change::SetWatermark { tenant, image } => match image {
                Some(image) => write!(
                    f,
                    "set the watermark of tenant {tenant} ({} bytes)",
                    image.len()
                ),
                None => write!(f, "remove the watermark of tenant {tenant}"),
            },
            Change::DecommissionNode { node } => write!(f, "decommission node {node}"),
            Change::Compacted => write!(f, "compacted (an edit overwritten since)"),
            Change::CompactedRun { through_seq } => {
                write!(
                    f,
                    "compacted through op {through_seq} (edits overwritten since)"
                )
            }
        }
    }
}

/// One entry of the log: an edit with its provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The node where the edit was made.
    pub origin: NodeId,
    /// Position in the origin's log, from 1 without gaps.
    pub seq: u64,
    /// Lamport time: above every op the origin had seen.
    pub lamport: u64,
    /// Wall-clock time at the origin, as passed in (for the audit trail only; never used
    /// to order edits).
    pub at_ms: u64,
    /// Who made the edit, as named by the caller (an operator token's name, say).
    pub actor: String,
    pub change: Change,
}

impl Op {
    pub fn stamp(&self) -> Stamp {
        Stamp {
            lamport: self.lamport,
            origin: self.origin,
        }
    }

    /// The last of its origin's ops this one stands for: `seq`, or the end of a compacted
    /// run. What a replica holding it holds of the origin's log.
    pub fn last_seq(&self) -> u64 {
        match self.change {
            Change::CompactedRun { through_seq } => through_seq,
            _ => self.seq,
        }
    }

    /// Whether it is a placeholder for compacted ops (never shown as history).
    pub fn is_compacted(&self) -> bool {
        matches!(self.change, Change::Compacted | Change::CompactedRun { .. })
    }

    pub(crate) fn validate(&self) -> Result<(), DirectoryError> {
        if self.seq == 0 {
            return Err(DirectoryError::InvalidField {
                field: "seq",
                reason: "sequence numbers start at 1".into(),
            });
        }
        if self.lamport == 0 || self.lamport > limits::LAMPORT_MAX {
            return Err(DirectoryError::InvalidField {
                field: "lamport",
                reason: format!("must be 1..={}", limits::LAMPORT_MAX),
            });
        }
        if self.actor.len() > limits::ACTOR_BYTES_MAX || self.actor.chars().any(char::is_control) {
            return Err(DirectoryError::InvalidField {
                field: "actor",
                reason: format!(
                    "must be at most {} bytes without control characters",
                    limits::ACTOR_BYTES_MAX
                ),
            });
        }
        // An origin's Lamport times increase along its log, so its op `n` has a time of
        // at least `n`: a run cannot end past its own (the last op's) time.
        if let Change::CompactedRun { through_seq } = self.change {
            if through_seq < self.seq || through_seq > self.lamport {
                return Err(DirectoryError::InvalidField {
                    field: "through_seq",
                    reason: format!(
                        "a compacted run from op {} must end within {}..={}",
                        self.seq, self.seq, self.lamport
                    ),
                });
            }
        }
        self.change.validate()
    }
}

/// Why an edit or a peer's ops were refused. Nothing is changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DirectoryError {
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("unknown scope {0:?} (known: resize, usage)")]
    UnknownScope(String),
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    #[error("tenant {0} does not exist")]
    UnknownTenant(TenantId),
    #[error("tenant {0} was deleted")]
    TenantDeleted(TenantId),
    #[error("key {0} already exists")]
    KeyExists(KeyId),
    #[error("key {key} does not exist for tenant {tenant}")]
    UnknownKey { tenant: TenantId, key: KeyId },
    #[error("key {0} was revoked")]
    KeyRevoked(KeyId),
    #[error("signing secret {secret_id} already exists for tenant {tenant}")]
    SecretExists {
        tenant: TenantId,
        secret_id: SecretId,
    },
    #[error("signing secret {secret_id} does not exist or was retired for tenant {tenant}")]
    UnknownSecret {
        tenant: TenantId,
        secret_id: SecretId,
    },
    #[error("node {0} is this node: it cannot decommission itself (it leaves instead)")]
    DecommissionSelf(NodeId),
    #[error("the local log of node {0} is exhausted")]
    SequenceExhausted(NodeId),
    #[error("the directory log would exceed its cap of {bytes_max} bytes")]
    Full { bytes_max: usize },
    #[error("a delta holds {ops} ops, more than the cap of {ops_max}")]
    TooManyOps { ops: usize, ops_max: usize },
}
