//! Fuzz target: decoding a peer's sync message (`tessera_sync::Message::decode`), every
//! kind, at the transport's cap (`net::Settings::message_bytes_max`, 1 MiB).
//!
//! Properties: decoding never panics (a refusal is a typed `MessageError`); a message that
//! decodes is valid, so it re-encodes and decodes to the same value.

use tessera_sync::message::Message;

/// The transport's default frame cap (`message_bytes_max`).
const BYTES_MAX: usize = 1 << 20;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(message) = Message::decode(data, BYTES_MAX) {
            assert!(!message.kind().is_empty());
            let again = Message::decode(&message.encode(), usize::MAX).unwrap_or_else(|e| {
                panic!("a decoded {} does not round-trip: {e}", message.kind())
            });
            assert_eq!(again, message);
        }
    });
}
