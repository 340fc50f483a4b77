//! Fuzz target: taking an imgproxy URL apart (`tessera_edge::http::imgproxy::parse`: its
//! options translated into Tessera's), then parsing the translated options as the route
//! does (`params::parse`).
//!
//! Input: what follows `/ip/` in the path.
//! Properties: no panic; refusals are client errors (4xx); a URL that parses is signed over
//! exactly what follows its signature segment, and its options, once translated, are
//! Tessera options that parse or are refused as a client error — never a panic or a 5xx.

use tessera_edge::http::imgproxy;
use tessera_resize::Limits;

fn main() {
    let limits = Limits::default();
    afl::fuzz!(|data: &[u8]| {
        let Ok(rest) = std::str::from_utf8(data) else {
            return;
        };
        let path = format!("{}{rest}", imgproxy::PREFIX);
        let url = match imgproxy::parse(&path) {
            Ok(url) => url,
            Err(e) => {
                tessera_fuzz::assert_client_error(&e);
                return;
            }
        };
        let tail = rest
            .split_once('/')
            .and_then(|(_, after)| after.split_once('/'))
            .map(|(_, signed)| signed)
            .expect("a parsed URL has a tenant, a signature and a tail");
        assert_eq!(
            url.path,
            format!("/{tail}"),
            "the signed path is not the URL's tail"
        );
        tessera_fuzz::check_query(&url.query, None, &limits);
    });
}
