//! Fuzz target: taking a signed URL apart (`tessera_edge::http::signed::parse`), then parsing its
//! options as the route does (`params::parse`).
//!
//! Input: what follows `/v1/img/` in the path, then optionally `?` and the query string.
//! Properties: no panic; refusals are client errors (4xx); a URL that parses is signed
//! over exactly `<options>/<source>[?query]`, and a URL re-made from its parts with
//! `signed_path` parses to the same parts with a signature that verifies.

use tessera_edge::http::signed;
use tessera_resize::Limits;

/// Any signing secret: the property is that `sign` and `parse` agree on what is signed.
const SECRET: &[u8] = b"fuzz-signing-secret-0123456789";

fn main() {
    let limits = Limits::default();
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let (rest, query) = match text.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (text, None),
        };
        let path = format!("{}{rest}", signed::PREFIX);
        let url = match signed::parse(&path, query) {
            Ok(url) => url,
            Err(e) => {
                tessera_fuzz::assert_client_error(&e);
                return;
            }
        };
        let (options, source) = rest
            .split_once('/')
            .and_then(|(_, after)| after.split_once('/'))
            .expect("a parsed URL has options and a source");
        let mut signed_part = format!("{options}/{source}");
        if let Some(query) = query {
            signed_part.push('?');
            signed_part.push_str(query);
        }
        assert_eq!(
            url.message, signed_part,
            "the signed message is not the URL's tail"
        );
        // An empty options segment is re-made as `_` (none), which is signed differently.
        if query.is_none() && !options.is_empty() {
            let remade = signed::signed_path(url.tenant, SECRET, options, source);
            let again = signed::parse(&remade, None).expect("a re-signed URL parses");
            assert_eq!(again.mac, signed::sign(SECRET, &again.message));
            assert_eq!(
                (
                    &again.message,
                    &again.query,
                    again.expires_s,
                    &again.preset,
                    &again.source
                ),
                (
                    &url.message,
                    &url.query,
                    url.expires_s,
                    &url.preset,
                    &url.source
                )
            );
        }
        tessera_fuzz::check_query(&url.query, None, &limits);
    });
}
