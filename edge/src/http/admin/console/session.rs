//! Console sessions: an operator token exchanged once for a random session id carried in
//! a cookie, with a CSRF token per session and an absolute expiry.
//!
//! Why sessions at all rather than the token in a cookie: the token is long-lived and
//! grants the admin API; a session id is worth nothing after logout or
//! `console.session_ttl_ms`, and the token itself is never stored by the browser.
//!
//! The table keeps only digests of session ids (a leaked table, say a core dump, opens no
//! session), is bounded ([`SESSIONS_MAX`]: a login over it ends the session that expires
//! first), and is looked up with a single short hold of its own mutex — never the node's
//! lock. Sessions live in this node's memory only: a restart logs every operator out,
//! and each node of the fleet has its own login (the console shows one node's view).

use std::collections::HashMap;
use std::sync::Mutex;

use subtle::ConstantTimeEq;

use crate::control::auth;

/// Most sessions held at once (operators are few; the bound is against a script logging
/// in in a loop with a valid token).
pub const SESSIONS_MAX: usize = 1_024;

/// The session cookie's name.
pub const COOKIE: &str = "tessera_session";
/// The login form's CSRF cookie (double submit: the form and the cookie must agree).
pub const LOGIN_COOKIE: &str = "tessera_login";

/// A logged-in operator.
#[derive(Clone, Debug)]
pub struct Session {
    /// The operator as the audit history names it (`operator:<digest prefix>`).
    pub actor: String,
    /// The token every form of this session carries (hex).
    pub csrf: String,
    pub expires_ms: u64,
}

/// The console's sessions, by SHA-256 of their id.
#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Opens a session for `actor` until `now_ms + ttl_ms`; returns its id (the cookie's
    /// value, 64 hex digits), the only copy of it.
    pub fn open(&self, actor: String, now_ms: u64, ttl_ms: u64) -> String {
        let id = auth::hex(&auth::random_bytes::<32>());
        let session = Session {
            actor,
            csrf: auth::hex(&auth::random_bytes::<16>()),
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        let digest = auth::sha256(id.as_bytes());
        let mut table = self.table.lock().expect("sessions lock");
        table.retain(|_, s| s.expires_ms > now_ms);
        if table.len() >= SESSIONS_MAX {
            if let Some(first) = table
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| *k)
            {
                table.remove(&first);
            }
        }
        table.insert(digest, session);
        id
    }

    /// The live session whose id is `id`; an expired one is removed and not returned.
    pub fn get(&self, id: &str, now_ms: u64) -> Option<Session> {
        let digest = auth::sha256(id.as_bytes());
        let mut table = self.table.lock().expect("sessions lock");
        match table.get(&digest) {
            Some(s) if s.expires_ms > now_ms => Some(s.clone()),
            Some(_) => {
                table.remove(&digest);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id` (logout).
    pub fn close(&self, id: &str) {
        let digest = auth::sha256(id.as_bytes());
        self.table.lock().expect("sessions lock").remove(&digest);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().expect("sessions lock").len()
    }
}

/// Whether two CSRF tokens agree (constant time; an empty one never does).
pub fn same_token(sent: &str, expected: &str) -> bool {
    !expected.is_empty()
        && sent.len() == expected.len()
        && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value for the console's paths: HttpOnly, SameSite=Strict, `Secure` when
/// the node serves TLS; `max_age_s` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_s: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/console; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_close_and_stay_bounded() {
        let sessions = Sessions::default();
        let id = sessions.open("operator:a".into(), 1_000, 500);
        assert_eq!(id.len(), 64);
        let s = sessions.get(&id, 1_499).expect("live");
        assert_eq!(s.actor, "operator:a");
        assert_eq!(s.csrf.len(), 32);
        assert!(
            sessions.get(&id, 1_500).is_none(),
            "expired at its deadline"
        );
        assert!(sessions.get(&id, 1_000).is_none(), "and removed");
        let id = sessions.open("operator:a".into(), 2_000, 500);
        sessions.close(&id);
        assert!(sessions.get(&id, 2_001).is_none());
        assert!(sessions.get("not-a-session", 2_001).is_none());
        for i in 0..SESSIONS_MAX as u64 + 10 {
            sessions.open("operator:b".into(), 3_000, 1_000 + i);
        }
        assert_eq!(sessions.len(), SESSIONS_MAX);
    }

    #[test]
    fn cookies_and_tokens() {
        let header = Some("a=1; tessera_session=abc ; b=2");
        assert_eq!(cookie(header, COOKIE), Some("abc"));
        assert_eq!(cookie(header, "c"), None);
        assert_eq!(cookie(None, COOKIE), None);
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abce", "abcd"));
        assert!(!same_token("", ""));
        let set = set_cookie(COOKIE, "v", 60, true);
        assert!(
            set.contains("HttpOnly")
                && set.contains("SameSite=Strict")
                && set.ends_with("; Secure")
        );
        assert!(!set_cookie(COOKIE, "v", 60, false).contains("Secure"));
    }
}
