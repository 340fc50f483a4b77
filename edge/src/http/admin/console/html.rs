//! The console's HTML: escaping, the page frame (navigation, logout, notices), the
//! stylesheet, and the headers every console answer carries.
//!
//! Pages are built with `format!`/`write!` into a `String`, not a template engine: there
//! are five pages, no build step, and every value from the directory (names, labels,
//! origins, presets — all operator- or tenant-controlled text) goes through [`Esc`], the
//! one escaping function. The Content-Security-Policy allows no script at all and styles
//! only from `/console/style.css`, so a value that escaped escaping still could not run.

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use tessera_crdt::{Period, PeriodKind};

use super::session::Session;

/// Text escaped for HTML element content and double- or single-quoted attribute values.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// Text escaped for a URL's query component (then for HTML by the caller's `Esc`, though
/// nothing this leaves needs it).
pub struct Url<'a>(pub &'a str);

impl fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encoded: String = form_urlencoded::byte_serialize(self.0.as_bytes()).collect();
        f.write_str(&encoded)
    }
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Cluster,
    Tenants,
    Usage,
    None,
}

/// A whole page: the frame around `body`, with the navigation and the logout form when
/// there is a session, and `notice` (already escaped markup) above the body.
pub fn page(title: &str, nav: Nav, session: Option<&Session>, notice: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2_048);
    out.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/console/style.css\">\
         <link rel=\"icon\" href=\"/console/favicon.svg\" type=\"image/svg+xml\">",
    );
    out.push_str(&format!(
        "<title>{} · Tessera console</title></head><body>",
        Esc(title)
    ));
    if let Some(session) = session {
        let item = |id: &str, href: &str, label: &str, this: Nav| {
            let current = if nav == this {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a id=\"{id}\" href=\"{href}\"{current}>{label}</a>")
        };
        out.push_str(&format!(
            "<header><nav><strong>Tessera</strong>{}{}{}</nav>\
             <form id=\"logout\" method=\"post\" action=\"/console/logout\">{}\
             <button type=\"submit\">Log out</button></form></header>",
            item("nav-cluster", "/console/cluster", "Cluster", Nav::Cluster),
            item("nav-tenants", "/console/tenants", "Tenants", Nav::Tenants),
            item("nav-usage", "/console/usage", "Usage", Nav::Usage),
            csrf_field(session),
        ));
    }
    out.push_str(notice);
    out.push_str(body);
    out.push_str("</body></html>\n");
    out
}

/// The hidden field every form of a session carries.
pub fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        Esc(&session.csrf)
    )
}

/// A notice above a page: `ok` (done) or an error, escaped.
pub fn notice(ok: bool, text: &str) -> String {
    let class = if ok { "ok" } else { "error" };
    format!(
        "<p id=\"notice\" class=\"{class}\" role=\"status\">{}</p>",
        Esc(text)
    )
}

/// An HTML answer with the console's headers: no caching (pages show live state and
/// carry CSRF tokens), no framing, no script, a referrer only to this node (`no-referrer` would make
/// browsers post forms with `Origin: null`, which [`super::same_origin`] refuses).
pub fn respond(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    secure_headers(response.headers_mut(), "text/html; charset=utf-8");
    response
}

/// The headers every console answer carries, `content_type` included.
pub fn secure_headers(headers: &mut axum::http::HeaderMap, content_type: &'static str) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (the hour from the ledger's
/// calendar, [`Period`]'s).
pub fn time(ms: u64) -> String {
    let hour = Period::containing(PeriodKind::Hour, ms);
    let secs = ms / 1_000 % 3_600;
    format!("{hour}:{:02}:{:02}Z", secs / 60, secs % 60)
}

/// A duration in milliseconds, short (`850 ms`, `12.5 s`, `3 min`, `2 h`, `4 d`).
pub fn age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1e3),
        60_000..=3_599_999 => format!("{} min", ms / 60_000),
        3_600_000..=172_799_999 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// The console's icon (served at `/console/favicon.svg`): four tiles.
pub const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
<rect x=\"1\" y=\"1\" width=\"6\" height=\"6\" fill=\"#0b63c5\"/><rect x=\"9\" y=\"1\" width=\"6\" height=\"6\" fill=\"#4493f8\"/>\
<rect x=\"1\" y=\"9\" width=\"6\" height=\"6\" fill=\"#4493f8\"/><rect x=\"9\" y=\"9\" width=\"6\" height=\"6\" fill=\"#0b63c5\"/></svg>";

/// The console's stylesheet (served at `/console/style.css`).
pub const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--muted:#59636e;--line:#d1d9e0;--accent:#0b63c5;--bad:#b42318;--good:#1a7f37}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9198a1;--line:#3d444d;--accent:#4493f8;--bad:#f85149;--good:#3fb950}}
body{font:15px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;max-width:72rem;padding:0 1rem 3rem}
header{display:flex;justify-content:space-between;align-items:center;border-bottom:1px solid var(--line);padding:.6rem 0;margin-bottom:1rem}
nav a{margin-left:1rem;color:var(--accent);text-decoration:none}nav a[aria-current]{font-weight:600;text-decoration:underline}
a{color:var(--accent)}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:500}td.time{white-space:nowrap}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,monospace;font-size:.9em}
.bad{color:var(--bad)}.good{color:var(--good)}.muted{color:var(--muted)}
#notice{padding:.5rem .8rem;border-radius:4px;border:1px solid var(--line)}#notice.ok{border-color:var(--good)}#notice.error{border-color:var(--bad)}
form.inline{display:inline}form.row{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end;margin:.5rem 0}
label{display:flex;flex-direction:column;font-size:.85rem;color:var(--muted)}
input,select,button{font:inherit;padding:.25rem .5rem}
.secret{font-family:ui-monospace,monospace;padding:.5rem;border:1px dashed var(--bad);word-break:break-all}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}svg .bar{fill:var(--accent)}svg .axis{stroke:var(--line)}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            Esc("<script>alert('x') & \"y\"</script>").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(Esc("plain é").to_string(), "plain é");
        assert_eq!(Url("a b&c=d/é").to_string(), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(1_772_000_000_000), "2026-02-25T06:13:20Z");
        assert_eq!(time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(age(850), "850 ms");
        assert_eq!(age(12_500), "12.5 s");
        assert_eq!(age(7_200_000), "2 h");
    }
}
