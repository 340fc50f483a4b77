//! Tenants' watermarks, decoded: a cache keyed by (tenant, the stamp of the directory edit
//! that set the image), so a node decodes each version once, and a new version is a new
//! key (the old entry is never served again and ages out).
//!
//! The file lives in the tenant directory (`Change::SetWatermark`, at most
//! `WATERMARK_BYTES_MAX` bytes, checked by decoding when an operator sets it); what a
//! request needs is the decoded image for the pipeline and a digest of the file for the
//! ETag and the result cache's key (two versions of the mark are two different outputs).
//! A miss decodes on tokio's blocking pool (a bounded decode of at most 256 Ki pixels, a
//! few ms), never on a runtime thread. Bounded by the decoded bytes it holds.

use std::sync::Arc;

use moka::sync::Cache;
use sha2::{Digest, Sha256};
use tessera_crdt::directory::Stamp;
use tessera_crdt::TenantId;
use tessera_resize::Watermark;

use crate::http::error::{ApiError, ErrorCode};

// The directory's bound on the file and the decoder's are one bound: a file one accepts
// the other must.
const _: () = assert!(
    tessera_crdt::directory::limits::WATERMARK_BYTES_MAX == tessera_resize::WATERMARK_BYTES_MAX
);

/// Decoded watermarks a node keeps, bytes: 64 of the largest (1 MiB each), many more of a
/// real logo's size. A miss costs a few ms of decoding, so this is no correctness bound.
pub const MARKS_BYTES_MAX: u64 = 64 << 20;

/// A decoded watermark and the SHA-256 of its file.
#[derive(Debug)]
pub struct Mark {
    pub digest: [u8; 32],
    pub image: Watermark,
}

/// The decoded watermarks of recent requests.
pub struct Marks {
    cache: Cache<(TenantId, Stamp), Arc<Mark>>,
}

impl Marks {
    /// A cache of at most `bytes_max` bytes of decoded images.
    pub fn new(bytes_max: u64) -> Marks {
        Marks {
            cache: Cache::builder()
                .max_capacity(bytes_max)
                .weigher(|_, mark: &Arc<Mark>| {
                    u32::try_from(mark.image.bytes()).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// The decoded watermark `file` of `tenant`, set by the edit stamped `stamp`.
    pub async fn resolve(
        &self,
        tenant: TenantId,
        file: Arc<[u8]>,
        stamp: Stamp,
    ) -> Result<Arc<Mark>, ApiError> {
        if let Some(mark) = self.cache.get(&(tenant, stamp)) {
            return Ok(mark);
        }
        let decoded = decode_blocking(file).await?;
        let mark = Arc::new(decoded);
        self.cache.insert((tenant, stamp), mark.clone());
        Ok(mark)
    }
}

/// Decodes a watermark file and digests it, on tokio's blocking pool. A refusal keeps the
/// pipeline's class (413, 415, 422): an operator setting a file sees why it is refused; a
/// file the directory already holds was checked when it was set.
pub async fn decode_blocking(file: impl AsRef<[u8]> + Send + 'static) -> Result<Mark, ApiError> {
    tokio::task::spawn_blocking(move || {
        let file = file.as_ref();
        let image = Watermark::decode(file).map_err(|error| {
            let mut refused = ApiError::from(error);
            refused.message = format!("the watermark: {}", refused.message);
            refused
        })?;
        Ok(Mark {
            digest: Sha256::digest(file).into(),
            image,
        })
    })
    .await
    .map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "decoding the watermark failed",
        )
    })?
}
