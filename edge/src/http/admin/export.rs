//! Exports: this node's raw usage records (JSON lines or Parquet) and the merged totals
//! of every tenant for a period, each a page of the node's state at a time.

use super::*;

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

pub(super) fn export_format(format: Option<&str>) -> Result<bool, ApiError> {
    match format.unwrap_or("jsonl") {
        "jsonl" => Ok(false),
        "parquet" => Ok(true),
        other => Err(ApiError::bad_parameter(format!(
            "format {other:?}: expected jsonl or parquet"
        ))),
    }
}

pub(super) fn file_response(content_type: &'static str, body: Vec<u8>, rows: usize) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    response
        .headers_mut()
        .insert("x-rows", axum::http::HeaderValue::from(rows as u64));
    response
}

/// This node's raw usage records (every request it billed), as JSON lines or Parquet.
pub(super) async fn export_records(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    operator(&state, &headers)?;
    let parquet = export_format(query.format.as_deref())?;
    state
        .control
        .flush_records(state.commit_timeout())
        .await
        .map_err(|e| ApiError::overloaded(ErrorCode::StoreUnavailable, e.to_string(), 1))?;
    let dir = crate::control::records::directory(&state.config.data_dir);
    let (from, to) = (query.from_ms.unwrap_or(0), query.to_ms.unwrap_or(u64::MAX));
    let records =
        tokio::task::spawn_blocking(move || crate::control::records::read_all(&dir, from, to))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::ExportFailed,
                    e.to_string(),
                )
            })?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::ExportFailed,
                    e.to_string(),
                )
            })?;
    let rows = records.len();
    if parquet {
        let body = crate::control::records::to_parquet(&records).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::ExportFailed,
                e.to_string(),
            )
        })?;
        Ok(file_response("application/vnd.apache.parquet", body, rows))
    } else {
        Ok(file_response(
            "application/x-ndjson",
            crate::control::records::to_jsonl(&records),
            rows,
        ))
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
    if export_format(query.format.as_deref())? {
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
