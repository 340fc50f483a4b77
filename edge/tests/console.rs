//! The operator console over HTTP (no browser: `tests/tests/console_browser.rs` drives a
//! real one): login and its refusals, cookie flags, CSRF and cross-site refusals, every
//! page, escaping, and the forms' edits seen on the JSON API.

mod common;

use common::*;
use hyper::{Method, StatusCode};

/// The value of the first `name="<field>" value="..."` in a page.
fn field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

fn text(reply: &Reply) -> String {
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// `name=value` of the `Set-Cookie` setting `name`, with its attributes.
fn set_cookie(reply: &Reply, name: &str) -> String {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie: {reply:?}"))
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn get(node: &TestNode, path: &str, cookie: &str) -> Reply {
    request(
        node.addr,
        Method::GET,
        path,
        &[("cookie", cookie)],
        Vec::new(),
    )
    .await
}

async fn post(node: &TestNode, path: &str, cookie: &str, form: &str) -> Reply {
    request(
        node.addr,
        Method::POST,
        path,
        &[
            ("cookie", cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes().to_vec(),
    )
    .await
}

/// Logs in through the form; returns the session cookie pair.
async fn login(node: &TestNode) -> String {
    let form = get(node, "/console/login", "").await;
    assert_eq!(form.status, StatusCode::OK);
    let login_cookie = cookie_pair(&set_cookie(&form, "tessera_login"));
    let csrf = field(&text(&form), "csrf");
    let reply = post(
        node,
        "/console/login",
        &login_cookie,
        &format!("csrf={csrf}&token={}", urlencode(TOKEN)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    cookie_pair(&set_cookie(&reply, "tessera_session"))
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn usage_status(node: &TestNode, key: &str, tenant: &str) -> StatusCode {
    with_bearer(
        node.addr,
        key,
        Method::GET,
        &format!("/admin/v1/usage?tenant={tenant}"),
        None,
    )
    .await
    .status
}

#[tokio::test]
async fn console_logs_in_shows_every_page_and_its_forms_edit_the_directory() {
    let node = TestNode::start(keyed_config()).await;
    let tenant = create_tenant(node.addr, TOKEN, "acme<script>x</script>").await;
    let (_, key) = create_key(node.addr, &tenant, "resize,usage").await;
    let prefix = key.split('_').nth(1).unwrap().to_owned();
    assert_eq!(usage_status(&node, &key, &tenant).await, StatusCode::OK);

    // Without a session every page sends the browser to the login form.
    for path in [
        "/console",
        "/console/cluster",
        "/console/tenants",
        "/console/usage",
    ] {
        let reply = get(&node, path, "").await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
        let to = reply.header("location").unwrap();
        assert!(
            to == "/console/login" || to == "/console/cluster",
            "{path} -> {to}"
        );
    }

    // Login: the form's CSRF token must match its cookie, the token must be an operator's.
    let form = get(&node, "/console/login", "").await;
    let login_cookie = set_cookie(&form, "tessera_login");
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
    assert!(!login_cookie.contains("Secure"), "plain HTTP: not Secure");
    let csrf = field(&text(&form), "csrf");
    let login_cookie = cookie_pair(&login_cookie);
    let csp = form.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    let wrong = post(
        &node,
        "/console/login",
        &login_cookie,
        &format!("csrf={csrf}&token=nope"),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(text(&wrong).contains("not an operator token"));
    let forged = post(
        &node,
        "/console/login",
        "tessera_login=abc",
        &format!("csrf={csrf}&token={}", urlencode(TOKEN)),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let session = login(&node).await;
    let full = {
        let form = get(&node, "/console/login", "").await;
        let c = cookie_pair(&set_cookie(&form, "tessera_login"));
        let reply = post(
            &node,
            "/console/login",
            &c,
            &format!(
                "csrf={}&token={}",
                field(&text(&form), "csrf"),
                urlencode(TOKEN)
            ),
        )
        .await;
        set_cookie(&reply, "tessera_session")
    };
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(full.contains(attribute), "{attribute} missing from {full}");
    }

    // Pages.
    let cluster = get(&node, "/console/cluster", &session).await;
    assert_eq!(cluster.status, StatusCode::OK);
    let page = text(&cluster);
    assert!(
        page.contains("id=\"page-cluster\"") && page.contains(&node.state.control.id().to_string())
    );
    assert_eq!(cluster.header("cache-control"), Some("no-store"));
    let tenants = text(&get(&node, "/console/tenants", &session).await);
    assert!(
        tenants.contains("acme&lt;script&gt;x&lt;/script&gt;"),
        "{tenants}"
    );
    assert!(!tenants.contains("<script>"), "names are escaped");
    assert!(text(&get(&node, "/console/tenants?q=ACME", &session).await)
        .contains(&format!("/console/tenants/{tenant}")));
    assert!(text(&get(&node, "/console/tenants?q=zzz", &session).await).contains("No tenant."));
    let bad_query = get(&node, "/console/tenants?after=x", &session).await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    let detail = text(&get(&node, &format!("/console/tenants/{tenant}"), &session).await);
    assert!(
        detail.contains(&format!("data-key-prefix=\"{prefix}\"")),
        "{detail}"
    );
    let usage = get(&node, &format!("/console/usage?tenant={tenant}"), &session).await;
    assert_eq!(usage.status, StatusCode::OK);
    let usage = text(&usage);
    assert!(
        usage.contains("<svg id=\"usage-chart\"") && usage.contains("id=\"finality\""),
        "{usage}"
    );
    let rights = text(
        &get(
            &node,
            &format!("/console/cluster?tenant={tenant}"),
            &session,
        )
        .await,
    );
    assert!(rights.contains("id=\"rights\""), "{rights}");
    let missing = get(&node, "/console/tenants/nobody", &session).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(text(&missing).contains("not_found"));

    // A form without the session's CSRF token, or posted from another site, edits nothing.
    let csrf = field(&detail, "csrf");
    let revoke = format!("/console/tenants/{tenant}/keys/{prefix}/revoke");
    assert_eq!(
        post(&node, &revoke, &session, "csrf=0000").await.status,
        StatusCode::FORBIDDEN
    );
    let cross = request(
        node.addr,
        Method::POST,
        &revoke,
        &[
            ("cookie", &session),
            ("origin", "http://evil.example"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={csrf}").into_bytes(),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(
        usage_status(&node, &key, &tenant).await,
        StatusCode::OK,
        "the key still works"
    );

    // Revoked through the form: the API refuses the key.
    let revoked = post(&node, &revoke, &session, &format!("csrf={csrf}")).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", text(&revoked));
    assert!(text(&revoked).contains("revoked"));
    assert_eq!(
        usage_status(&node, &key, &tenant).await,
        StatusCode::UNAUTHORIZED
    );

    // A key created through the form is shown once and works.
    let created = post(
        &node,
        &format!("/console/tenants/{tenant}/keys"),
        &session,
        &format!("csrf={csrf}&label=console&scope=usage"),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", text(&created));
    let page = text(&created);
    let start = page.find("id=\"new-key\" class=\"secret\">").unwrap() + 28;
    let new_key = page[start..].split('<').next().unwrap().to_owned();
    assert!(new_key.starts_with("tsk_"), "{new_key}");
    assert_eq!(usage_status(&node, &new_key, &tenant).await, StatusCode::OK);
    let none = post(
        &node,
        &format!("/console/tenants/{tenant}/keys"),
        &session,
        &format!("csrf={csrf}&label=x"),
    )
    .await;
    assert_eq!(
        none.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no scope: refused as by the API"
    );

    // Suspend, create a tenant; the audit history names the operator.
    let suspended = post(
        &node,
        &format!("/console/tenants/{tenant}/status"),
        &session,
        &format!("csrf={csrf}&status=suspended"),
    )
    .await;
    assert!(text(&suspended).contains("id=\"tenant-status\">suspended<"));
    let made = post(
        &node,
        "/console/tenants",
        &session,
        &format!("csrf={csrf}&name=globex"),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", text(&made));
    let dup = post(
        &node,
        "/console/tenants",
        &session,
        &format!("csrf={csrf}&name=globex"),
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let shown = with_bearer(
        node.addr,
        TOKEN,
        Method::GET,
        "/admin/v1/tenants/globex",
        None,
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK);
    let history = text(&get(&node, &format!("/console/tenants/{tenant}"), &session).await);
    assert!(history.contains("operator:") && history.contains("id=\"history\""));

    // Logout ends the session.
    let out = post(&node, "/console/logout", &session, &format!("csrf={csrf}")).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        get(&node, "/console/cluster", &session).await.status,
        StatusCode::SEE_OTHER
    );
    node.stop().await;
}

#[tokio::test]
async fn a_disabled_console_is_not_served() {
    let mut config = keyed_config();
    config.console.enabled = false;
    let node = TestNode::start(config).await;
    let reply = get(&node, "/console/login", "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "not_found");
    node.stop().await;
}
