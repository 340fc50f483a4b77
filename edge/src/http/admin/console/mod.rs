//! The operator console (`/console`): server-rendered HTML pages over the admin API's
//! operations — cluster members and freshness, quota rights per node, tenants (search,
//! pages, detail with keys, secrets, origins, quotas, presets and audit history), usage
//! with harvest, finality and a chart — behind an operator login.
//!
//! Why server-rendered with no script: every page is a read of this node's replica plus a
//! few forms, which HTML does on its own; no build step, nothing to fetch from a CDN at an
//! edge that may be cut off, and a Content-Security-Policy that allows no script at all.
//!
//! Security, in the order a request meets it:
//! - login (`/console/login`) takes the operator token in a form and exchanges it for a
//!   session ([`session`]): a random id in a cookie that is `HttpOnly`, `SameSite=Strict`,
//!   `Secure` when the node serves TLS, scoped to `/console`, ending at logout or after
//!   `console.session_ttl_ms`; the token is never stored by the browser;
//! - every form carries the session's CSRF token (the login form a double-submit cookie),
//!   and a POST whose `Origin` or `Sec-Fetch-Site` says it came from another site is
//!   refused before anything else;
//! - a page reaches the node's state through the same named control-plane operations as
//!   the JSON API, and an edit through the same functions (`new_tenant`, `mint_key`,
//!   `revoke`, `set_tenant_status`): the checks, the audit actor (`operator:<digest>`)
//!   and the durability before the answer are the API's.
//!
//! The pages live in [`pages`]; the frame, escaping and headers in [`html`]; the chart in
//! [`chart`].

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{AdminBody, AdminQuery, Operator};
use crate::control::{auth, now_ms};
use crate::http::error::ApiError;
use crate::http::routes::AppState;

pub mod chart;
pub mod html;
mod pages;
pub mod session;

use html::{notice, page, respond, Esc, Nav};
use session::Session;

/// The console's routes (merged by the router when `console.enabled`).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(|| async { see_other("/console/cluster") }))
        .route("/console/style.css", get(style))
        .route("/console/favicon.svg", get(favicon))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/cluster", get(pages::cluster))
        .route(
            "/console/tenants",
            get(pages::tenants).post(pages::create_tenant),
        )
        .route("/console/tenants/{tenant}", get(pages::tenant))
        .route("/console/tenants/{tenant}/keys", post(pages::create_key))
        .route(
            "/console/tenants/{tenant}/keys/{key}/revoke",
            post(pages::revoke_key),
        )
        .route("/console/tenants/{tenant}/status", post(pages::set_status))
        .route("/console/usage", get(pages::usage))
}

async fn style() -> Response {
    let mut response = html::STYLE.into_response();
    html::secure_headers(response.headers_mut(), "text/css; charset=utf-8");
    response
}

async fn favicon() -> Response {
    let mut response = html::FAVICON.into_response();
    html::secure_headers(response.headers_mut(), "image/svg+xml");
    response
}

/// A 303 to `location` (after a form, so reloading does not post again).
fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    html::secure_headers(response.headers_mut(), "text/html; charset=utf-8");
    response
}

/// `response` with a `Set-Cookie` header per cookie.
fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Whether the node serves TLS, so cookies are marked `Secure`.
fn secure(state: &AppState) -> bool {
    state.serves_tls()
}

/// Why a console request is not served as asked.
enum Refusal {
    /// No live session: to the login form.
    Login,
    /// A form posted from another site.
    CrossSite,
    /// A form whose CSRF token is not its session's.
    Csrf(Session),
    /// A body that could not be read (too large, cut): the API's JSON error.
    Body(ApiError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Login => see_other("/console/login"),
            Refusal::CrossSite => forbidden(None, "this form was posted from another site"),
            Refusal::Csrf(session) => forbidden(
                Some(&session),
                "the form's CSRF token does not match this session (reload the page and retry)",
            ),
            Refusal::Body(error) => error.into_response(),
        }
    }
}

/// The session a request's cookie names; a missing or expired one is refused (to the
/// login form). The extractor of every page.
struct LoggedIn(Session);

impl FromRequestParts<Arc<AppState>> for LoggedIn {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Refusal> {
        let cookies = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok());
        session::cookie(cookies, session::COOKIE)
            .and_then(|id| state.console.get(id, now_ms()))
            .map(LoggedIn)
            .ok_or(Refusal::Login)
    }
}

/// A console form post, once its origin, its session and its CSRF token check out: the
/// extractor of every form.
struct Posted {
    session: Session,
    /// The operator, as the audit history names the session's.
    actor: Operator,
    form: Form,
}

impl FromRequest<Arc<AppState>> for Posted {
    type Rejection = Refusal;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Refusal> {
        let (mut parts, body) = request.into_parts();
        if !same_origin(&parts.headers) {
            return Err(Refusal::CrossSite);
        }
        let LoggedIn(session) = LoggedIn::from_request_parts(&mut parts, state).await?;
        let AdminBody(body) = AdminBody::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(Refusal::Body)?;
        let form = Form::parse(&body);
        if !session::same_token(form.get("csrf").unwrap_or(""), &session.csrf) {
            return Err(Refusal::Csrf(session));
        }
        let actor = Operator(session.actor.clone());
        Ok(Posted {
            session,
            actor,
            form,
        })
    }
}

/// A form body: `application/x-www-form-urlencoded` pairs in order.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (checkboxes).
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a POST came from this node's own pages, as far as the browser says: a
/// cross-site `Sec-Fetch-Site`, or an `Origin` whose host is not the `Host`, is refused
/// (SameSite cookies and CSRF tokens are the other two locks).
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn forbidden(session: Option<&Session>, message: &str) -> Response {
    respond(
        StatusCode::FORBIDDEN,
        page("Refused", Nav::None, session, &notice(false, message), ""),
    )
}

/// An API error as a console page: the same status, code and message the JSON API gives.
fn error_page(session: &Session, nav: Nav, error: ApiError) -> Response {
    let text = format!("{} ({})", error.message, error.code.as_str());
    let body = format!(
        "<main id=\"page-error\"><h1>{} {}</h1><p><a href=\"/console/tenants\">Tenants</a></p></main>",
        error.status.as_u16(),
        Esc(error.status.canonical_reason().unwrap_or("")),
    );
    respond(
        error.status,
        page("Error", nav, Some(session), &notice(false, &text), &body),
    )
}

async fn login_form(State(state): State<Arc<AppState>>) -> Response {
    login_page(&state, StatusCode::OK, "")
}

/// The login page with a fresh double-submit CSRF token (in the form and in a cookie).
fn login_page(state: &AppState, status: StatusCode, message: &str) -> Response {
    let token = auth::hex(&auth::random_bytes::<16>());
    let body = format!(
        "<main id=\"page-login\"><h1>Tessera console</h1>\
         <p class=\"muted\">Node <code>{}</code>. Sign in with an operator token \
         (<code>tessera</code> wrote the first one to <code>&lt;data-dir&gt;/operator-token</code>).</p>\
         <form id=\"login\" method=\"post\" action=\"/console/login\" class=\"row\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>Operator token<input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label>\
         <button type=\"submit\">Sign in</button></form></main>",
        state.control.id(),
        Esc(&token)
    );
    let shown = if message.is_empty() {
        String::new()
    } else {
        notice(false, message)
    };
    with_cookies(
        respond(status, page("Sign in", Nav::None, None, &shown, &body)),
        &[session::set_cookie(
            session::LOGIN_COOKIE,
            &token,
            3_600,
            secure(state),
        )],
    )
}

async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminBody(body): AdminBody,
) -> Response {
    if !same_origin(&headers) {
        return Refusal::CrossSite.into_response();
    }
    let form = Form::parse(&body);
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    let expected = session::cookie(cookies, session::LOGIN_COOKIE).unwrap_or("");
    if !session::same_token(form.get("csrf").unwrap_or(""), expected) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            "the login form expired or came from another page: sign in again",
        );
    }
    let token = form.get("token").unwrap_or("").trim();
    if !auth::is_operator(&state.operator_digests, token) {
        tracing::info!(target: "tessera::console", "console login refused: not an operator token");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            "that is not an operator token of this node",
        );
    }
    let Operator(actor) = Operator::of(token);
    let ttl_ms = state.config.console.session_ttl_ms;
    let id = state.console.open(actor.clone(), now_ms(), ttl_ms);
    tracing::info!(target: "tessera::console", actor, "console login");
    let secure = secure(&state);
    with_cookies(
        see_other("/console/cluster"),
        &[
            session::set_cookie(session::COOKIE, &id, ttl_ms / 1_000, secure),
            session::set_cookie(session::LOGIN_COOKIE, "", 0, secure),
        ],
    )
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Posted { session, .. }: Posted,
) -> Response {
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if let Some(id) = session::cookie(cookies, session::COOKIE) {
        state.console.close(id);
    }
    tracing::info!(target: "tessera::console", actor = session.actor, "console logout");
    with_cookies(
        see_other("/console/login"),
        &[session::set_cookie(session::COOKIE, "", 0, secure(&state))],
    )
}
