//! Exports: this node's raw usage records (JSON lines or Parquet) and the merged totals
//! of every tenant for a period, both streamed: records an hourly file at a time,
//! totals a page of the node's state at a time.

use super::*;
use crate::control::records::ExportFormat;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    from_ms: Option<u64>,
    #[serde(default)]
    to_ms: Option<u64>,
    #[serde(default)]
    period: Option<String>,
}

pub(super) fn export_format(format: Option<&str>) -> Result<ExportFormat, ApiError> {
    match format.unwrap_or("jsonl") {
        "jsonl" => Ok(ExportFormat::Jsonl),
        "parquet" => Ok(ExportFormat::Parquet),
        other => Err(ApiError::bad_parameter(format!(
            "format {other:?}: expected jsonl or parquet"
        ))),
    }
}

/// This node's raw usage records (every request it billed), as JSON lines or Parquet.
///
/// Streamed: a blocking thread reads the hourly files one at a time and writes the
/// export into a channel of a few 64 KiB chunks that the response drains as the client
/// reads, so memory holds one hour of records and a few chunks, not the file (before, the
/// whole export was built in memory first). A client that leaves closes the channel and
/// the thread stops at its next chunk. A read error after the answer started ends the
/// body with an error (the client sees a cut response, never a short one that looks
/// whole).
pub(super) async fn export_records(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    operator(&state, &headers)?;
    let format = export_format(query.format.as_deref())?;
    state
        .control
        .flush_records(state.commit_timeout())
        .await
        .map_err(|e| ApiError::overloaded(ErrorCode::StoreUnavailable, e.to_string(), 1))?;
    let dir = crate::control::records::directory(&state.config.data_dir);
    let (from, to) = (query.from_ms.unwrap_or(0), query.to_ms.unwrap_or(u64::MAX));
    let export_failed = |e: String| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ExportFailed,
            e,
        )
    };
    let files = tokio::task::spawn_blocking(move || crate::control::records::files(&dir, from, to))
        .await
        .map_err(|e| export_failed(e.to_string()))?
        .map_err(|e| export_failed(e.to_string()))?;
    let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_QUEUED);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            sender: sender.clone(),
            chunk: Vec::with_capacity(EXPORT_CHUNK_BYTES),
        };
        let written = crate::control::records::export(&files, from, to, format, &mut out)
            .and_then(|_| out.send_chunk());
        if let Err(error) = written {
            // Gone: the client left, nobody to tell.
            let _ = sender.blocking_send(Err(error));
        }
    });
    let content_type = match format {
        ExportFormat::Jsonl => "application/x-ndjson",
        ExportFormat::Parquet => "application/vnd.apache.parquet",
    };
    let mut response = Response::new(axum::body::Body::new(ChannelBody(receiver)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// Bytes of one chunk of a streamed export, and how many may wait for the client.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
const EXPORT_CHUNKS_QUEUED: usize = 4;

/// `std::io::Write` into a streamed body's channel, a chunk at a time, from a blocking
/// thread; it fails with `BrokenPipe` once the body is dropped (the client left).
struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>,
    chunk: Vec<u8>,
}

impl ChunkWriter {
    fn send_chunk(&mut self) -> std::io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(EXPORT_CHUNK_BYTES));
        self.sender
            .blocking_send(Ok(chunk.into()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.chunk.extend_from_slice(bytes);
        if self.chunk.len() >= EXPORT_CHUNK_BYTES {
            self.send_chunk()?;
        }
        Ok(bytes.len())
    }

    /// Chunks go when full (and the last one at the end): a flush by a layer above
    /// does not send a small frame.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response body fed through a channel (see [`ChunkWriter`]).
struct ChannelBody(tokio::sync::mpsc::Receiver<std::io::Result<axum::body::Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(hyper::body::Frame::data)))
    }
}

/// Merged totals of every tenant for a period (default: this month), as JSON lines,
/// with the same harvest caveat as `/admin/v1/usage`: what this node knows.
pub(super) async fn export_totals(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    operator(&state, &headers)?;
    if export_format(query.format.as_deref())? == ExportFormat::Parquet {
        return Err(ApiError::bad_parameter(
            "totals are exported as jsonl (records can be parquet)",
        ));
    }
    let period = match query.period.as_deref() {
        None => Period::containing(PeriodKind::Month, now_ms()),
        Some(text) => text.parse::<Period>().map_err(|e| {
            ApiError::bad_parameter(format!("period {text:?}: {e} (expected e.g. 2026-11)"))
        })?,
    };
    // Streamed: a page of tenants at a time (each page a few short holds of the node's
    // lock, settled periods from their settlement), rendered after them and sent as the
    // client reads, so an export of 100K tenants holds one page in memory, not the file.
    let body = TotalsBody {
        control: state.control.clone(),
        period,
        after: None,
        done: false,
    };
    let mut response = Response::new(axum::body::Body::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The totals export's body: one page of tenants per frame, fetched when the client has
/// taken the previous one (hyper polls a body only as the connection drains).
struct TotalsBody {
    control: Arc<ControlPlane>,
    period: Period,
    after: Option<TenantId>,
    done: bool,
}

impl hyper::body::Body for TotalsBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return std::task::Poll::Ready(None);
        }
        let page = self
            .control
            .totals_page(self.period, self.after, PAGE_DEFAULT);
        let mut body = Vec::new();
        for (tenant, values) in &page {
            let line = json!({
                "tenant": tenant.0.to_string(),
                "period": self.period.to_string(),
                "usage": metric_map(values),
            });
            serde_json::to_writer(&mut body, &line).expect("JSON serialises");
            body.push(b'\n');
        }
        match page.last() {
            Some((last, _)) if page.len() == PAGE_DEFAULT => self.after = Some(*last),
            _ => self.done = true,
        }
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(body.into()))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
