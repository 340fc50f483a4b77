//! Fuzz target: decoding every replicated state and delta the crdt crate stores or sends
//! (ledger state and delta, version vector, bounded counter, escrow book, directory state,
//! delta and sync message). The kind byte of the envelope picks the type, so one input is
//! offered to every decoder and all but one refuse it at the header.
//!
//! Properties: decoding never panics (refusals are typed `DecodeError`s); what decodes
//! re-encodes and decodes to the same value (or the same state); merging a decoded state
//! into a copy of itself changes nothing (a join is idempotent, even on hostile input).

use tessera_crdt::directory::SyncMessage;
use tessera_crdt::{
    BoundedCounter, Delta, Directory, DirectoryDelta, EscrowBook, Ledger, VersionVector,
};

/// The cap for the decoders that take one: far above any input AFL makes (1 MiB).
const BYTES_MAX: usize = 1 << 20;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(v) = VersionVector::decode(data) {
            assert_eq!(VersionVector::decode(&v.encode()), Ok(v.clone()));
            let mut joined = v.clone();
            joined.merge(&v);
            assert_eq!(joined, v);
        }
        if let Ok(c) = BoundedCounter::decode(data) {
            assert_eq!(BoundedCounter::decode(&c.encode()), Ok(c.clone()));
            assert!(!c.clone().merge(&c), "a counter grew by merging itself");
        }
        if let Ok(book) = EscrowBook::decode(data) {
            assert!(EscrowBook::decode(&book.encode()).is_ok_and(|b| b == book));
            let mut joined = book.clone();
            joined.merge(&book);
            assert!(joined == book, "a book changed by merging itself");
        }
        if let Ok(d) = Delta::decode(data) {
            assert_eq!(Delta::decode(&d.encode()), Ok(d));
        }
        if let Ok(ledger) = Ledger::decode(data) {
            let again = Ledger::decode(&ledger.encode()).expect("a decoded ledger round-trips");
            assert!(again.same_state(&ledger));
            let mut joined = ledger.clone();
            joined.merge(&ledger);
            assert!(
                joined.same_state(&ledger),
                "a ledger changed by merging itself"
            );
        }
        if let Ok(d) = DirectoryDelta::decode(data, BYTES_MAX) {
            assert_eq!(DirectoryDelta::decode(&d.encode(), usize::MAX), Ok(d));
        }
        if let Ok(m) = SyncMessage::decode(data, BYTES_MAX) {
            assert_eq!(SyncMessage::decode(&m.encode(), usize::MAX), Ok(m));
        }
        if let Ok(dir) = Directory::decode(data, BYTES_MAX) {
            let again = Directory::decode(&dir.encode(), usize::MAX)
                .expect("a decoded directory round-trips");
            assert!(again.same_state(&dir));
            let mut joined = dir.clone();
            joined.merge(&dir);
            assert!(
                joined.same_state(&dir),
                "a directory changed by merging itself"
            );
        }
    });
}
