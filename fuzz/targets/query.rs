//! Fuzz target: the resize query string and `Accept` header (`tessera_edge::http::params::parse`)
//! with the node's default limits.
//!
//! Input: the query string, then optionally a newline and the `Accept` header.
//! Properties: parsing never panics; a refusal is a client error (4xx) with a code; what
//! parses is valid for the pipeline, and written back as a canonical query string it
//! parses to the same options.

use tessera_resize::Limits;

fn main() {
    let limits = Limits::default();
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let (query, accept) = match text.split_once('\n') {
            Some((query, accept)) => (query, Some(accept)),
            None => (text, None),
        };
        tessera_fuzz::check_query(query, accept, &limits);
    });
}
