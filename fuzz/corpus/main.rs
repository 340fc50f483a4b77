//! Writes the seed corpora of the fuzz targets (`scripts/fuzz-corpus.sh` runs it):
//! `fuzz-corpus <out-dir> [photos-dir]` makes `<out-dir>/<target>/` for every target.
//!
//! Seeds are real encodings made by the crates themselves (every sync message kind, every
//! CRDT state and delta), the hostile corpus of `resize/tests/hostile_inputs` (the same
//! generator, not a copy), small variants of the shared photos (downscaled by the pipeline
//! in each output format, and header prefixes that keep EXIF, ICC, CMYK and 16-bit
//! headers), sample query strings, signed URL paths and admin bodies. AFL works best on
//! small seeds, so none is over 64 KiB.

#[allow(dead_code)]
#[path = "../../resize/tests/hostile_inputs/mod.rs"]
mod hostile_inputs;

use std::fs;
use std::path::{Path, PathBuf};

use tessera_crdt::directory::SyncMessage;
use tessera_crdt::{
    BoundedCounter, Change, CounterKey, Directory, EscrowBook, KeyId, Ledger, Metric, NodeId,
    Period, PeriodKind, Scopes, SecretId, TenantId, VersionVector,
};
use tessera_resize::{Fit, FormatRequest, Limits, Options, OutputFormat, Pipeline};
use tessera_sync::message::Message;

/// AFL's advice: seeds of a few KiB; none over this.
const SEED_BYTES_MAX: usize = 64 << 10;

/// Resize selectors each image is written with (see `tessera_fuzz::resize_options`): JPEG
/// into 48x40, PNG cover 64 wide, WebP fill 40 high, auto (WebP) original size.
const SELECTORS: [u8; 4] = [0x00, 0x29, 0x52, 0x7c];

struct Seeds {
    dir: PathBuf,
    count: usize,
}

impl Seeds {
    fn new(root: &Path, target: &str) -> Seeds {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("create the corpus folder");
        Seeds { dir, count: 0 }
    }

    fn add(&mut self, name: &str, bytes: &[u8]) {
        if bytes.len() > SEED_BYTES_MAX {
            return;
        }
        let file: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        fs::write(self.dir.join(format!("{:03}-{file}", self.count)), bytes).expect("write a seed");
        self.count += 1;
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let out = PathBuf::from(
        args.next()
            .expect("usage: fuzz-corpus <out-dir> [photos-dir]"),
    );
    let photos = args.next().map(PathBuf::from);
    let counts = [
        ("resize", resize(&out, photos.as_deref())),
        ("query", query(&out)),
        ("signed_url", signed_url(&out)),
        ("imgproxy_url", imgproxy_url(&out)),
        ("sync_message", sync_message(&out)),
        ("crdt_state", crdt_state(&out)),
        ("admin_body", admin_body(&out)),
    ];
    for (target, count) in counts {
        println!("{target}: {count} seeds");
    }
}

fn with_selectors(seeds: &mut Seeds, name: &str, image: &[u8]) {
    for selector in SELECTORS {
        let mut input = vec![selector];
        input.extend_from_slice(image);
        seeds.add(name, &input);
    }
}

fn resize(out: &Path, photos: Option<&Path>) -> usize {
    let mut seeds = Seeds::new(out, "resize");
    // A small deflate bomb (16 MiB of zeros, ~16 KiB): the corpus' PNG and GIF bombs keep
    // their structure, and AFL can grow them.
    for (name, bytes, _) in hostile_inputs::corpus(&hostile_inputs::zlib_zeros(16 << 20)) {
        with_selectors(&mut seeds, name, &bytes);
    }
    with_selectors(&mut seeds, "gif", &hostile_inputs::gif_with(24, 16, &[]));
    with_selectors(
        &mut seeds,
        "webp-vp8x",
        &hostile_inputs::webp_with(24, 16, &[]),
    );
    let Some(photos) = photos.filter(|p| p.is_dir()) else {
        eprintln!("fuzz-corpus: no photos folder; resize seeds are generated ones only");
        return seeds.count;
    };
    let mut pipeline = Pipeline::new(Limits::default());
    let mut files: Vec<PathBuf> = fs::read_dir(photos)
        .expect("read the photos folder")
        .chain(fs::read_dir(photos.join("bad")).into_iter().flatten())
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e != "md"))
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = fs::read(&path).expect("read a photo");
        // Header prefixes keep what downscaling strips (EXIF orientation, ICC, CMYK, 16-bit,
        // animation); the pipeline refuses them as cut short, which AFL then explores.
        for prefix in [4 << 10, 24 << 10] {
            if bytes.len() > prefix {
                with_selectors(
                    &mut seeds,
                    &format!("{name}-prefix{prefix}"),
                    &bytes[..prefix],
                );
            }
        }
        if bytes.len() <= SEED_BYTES_MAX - 1 {
            with_selectors(&mut seeds, &name, &bytes);
        }
        for (format, side) in [
            (OutputFormat::Jpeg, 96),
            (OutputFormat::Png, 48),
            (OutputFormat::WebP, 64),
        ] {
            let options = Options {
                width: Some(side),
                height: Some(side),
                fit: Fit::Contain,
                format: FormatRequest::Fixed(format),
                progressive: side == 96 && name.contains("seeding"),
                ..Options::default()
            };
            if let Ok(small) = pipeline.process(&bytes, &options) {
                with_selectors(
                    &mut seeds,
                    &format!("{name}-{}", format.as_str()),
                    &small.bytes,
                );
            }
        }
    }
    seeds.count
}

fn query(out: &Path) -> usize {
    let mut seeds = Seeds::new(out, "query");
    for text in [
        "w=300",
        "w=300&h=200&fit=cover&gravity=north",
        "h=120&format=webp&q=70",
        "w=64&h=64&fit=fill&format=png&progressive=false",
        "w=800&fit=scale-down&format=jpeg&progressive=true&q=90",
        "w=400&format=auto\nimage/avif,image/webp,image/*,*/*;q=0.8",
        "w=400&format=auto\nimage/webp;q=0, image/png",
        "format=original&gravity=south-east",
        "w=%33%30%30&h=+20",
        "widht=300",
        "w=0",
        "w=99999999999",
        "q=101",
        "w=1&w=2",
        "fit=",
    ] {
        seeds.add(text, text.as_bytes());
    }
    seeds.count
}

fn signed_url(out: &Path) -> usize {
    let mut seeds = Seeds::new(out, "signed_url");
    let secret = b"0123456789abcdef0123456789abcdef";
    for (options, source) in [
        (
            "w=300,h=200,fit=cover",
            "https://images.example.com/a/b.jpg",
        ),
        ("_", "http://origin.test/photo.png"),
        (
            "w=64,exp=1900000000",
            "https%3A%2F%2Fimg.example.org%2Fx%20y.webp",
        ),
        ("preset=thumb,format=webp", "https:/merged.example/p.jpg"),
        (
            "w=10,q=50,progressive=1",
            "http://127.0.0.1:8080/i.gif?size=big&v=2",
        ),
    ] {
        let path = tessera_edge::http::signed::signed_path(TenantId(42), secret, options, source);
        let tail = path
            .strip_prefix(tessera_edge::http::signed::PREFIX)
            .expect("signed_path starts with the prefix");
        seeds.add(options, tail.as_bytes());
    }
    seeds.count
}

fn imgproxy_url(out: &Path) -> usize {
    let mut seeds = Seeds::new(out, "imgproxy_url");
    for (name, tail) in [
        ("docs", "7/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"),
        ("plain", "42/sig/w:300/h:200/q:70/plain/http%3A%2F%2Fimg.example.com%2Fa+b.jpg@webp"),
        ("many", "1/s/s:100:50:1:1/g:fp:0.3:0.7/bl:2/sh:0.5/rot:90/fl:1:0/t:10/bg:ff0000/dpr:2/pr:thumb/exp:1900000000/cb:x/aHR0cDovL2EvYi5qcGc"),
        ("refused", "1/s/pd:1:2:3:4/c:10:10/wm:1/plain/http://a/b"),
    ] {
        seeds.add(name, tail.as_bytes());
    }
    seeds.count
}

fn key(tenant: u64, metric: Metric) -> CounterKey {
    CounterKey::new(
        TenantId(tenant),
        Period::month(2026, 11).expect("a valid month"),
        metric,
    )
}

/// A ledger with usage on two nodes, a directory with one of every kind of edit, and a
/// bounded counter with grants, use, a refund and a transfer.
fn states() -> (Ledger, Ledger, Directory, BoundedCounter, EscrowBook) {
    let mut a = Ledger::new(NodeId(1));
    let mut b = Ledger::new(NodeId(2));
    for (i, metric) in Metric::ALL.into_iter().enumerate() {
        a.increment(key(5, metric), 10 + i as u64)
            .expect("increment");
        b.increment(key(6, metric), 1000 * i as u64 + 1)
            .expect("increment");
    }
    a.merge(&b);
    let mut directory = Directory::new(NodeId(1));
    let tenant = TenantId(5);
    let changes = [
        Change::CreateTenant {
            tenant,
            name: "acme".into(),
            home: NodeId(1),
        },
        Change::CreateKey {
            tenant,
            key: KeyId(9),
            prefix: "tsk_abcd".into(),
            secret_hash: [3; 32],
            scopes: Scopes::parse("resize,usage").expect("known scopes"),
            label: "ci".into(),
        },
        Change::AddSigningSecret {
            tenant,
            secret_id: SecretId(1),
            secret: vec![9; 32],
        },
        Change::SetPrimarySecret {
            tenant,
            secret_id: SecretId(1),
        },
        Change::SetOrigin {
            tenant,
            origin: "https://images.example.com".into(),
            allowed: true,
        },
        Change::SetQuota {
            tenant,
            metric: Metric::Requests,
            period: PeriodKind::Month,
            limit: Some(1000),
        },
        Change::SetPreset {
            tenant,
            name: "thumb".into(),
            options: Some("w=200&h=200&fit=cover".into()),
        },
        Change::SetWatermark {
            tenant,
            image: Some(b"\x89PNG\r\n\x1a\n watermark".to_vec()),
        },
        Change::SetTenantStatus {
            tenant,
            status: tessera_crdt::directory::TenantStatus::Suspended,
        },
        Change::RevokeKey {
            tenant,
            key: KeyId(9),
        },
    ];
    for (at_ms, change) in changes.into_iter().enumerate() {
        directory
            .change(at_ms as u64 + 1, "operator", change)
            .expect("a valid edit");
    }
    let mut counter = BoundedCounter::new();
    counter.grant(NodeId(1), 100).expect("grant");
    counter.consume(NodeId(1), 30).expect("consume");
    counter.refund(NodeId(1), 5).expect("refund");
    counter
        .transfer(NodeId(1), NodeId(2), 20)
        .expect("transfer");
    counter.consume(NodeId(2), 7).expect("consume");
    let mut book = EscrowBook::new();
    book.merge_counter(key(5, Metric::Requests), &counter);
    book.merge_counter(key(5, Metric::BytesIn), &counter);
    (a, b, directory, counter, book)
}

fn sync_message(out: &Path) -> usize {
    let mut seeds = Seeds::new(out, "sync_message");
    let (ledger, _, directory, counter, _) = states();
    let delta = ledger.delta_since(&VersionVector::new(), 64);
    let directory_delta = directory.delta_since(&VersionVector::new(), 64);
    let request = key(5, Metric::Requests);
    let messages = [
        Message::LedgerPush {
            delta: delta.clone(),
            first_change_ms: 1_764_000_000_000,
            relay: true,
        },
        Message::LedgerPull {
            digest: ledger.version_vector().clone(),
            settled: vec![request.period],
            forgotten_before_ms: 1_700_000_000_000,
            resume: None,
        },
        Message::LedgerChunk { delta, more: true },
        Message::SettlementPart(
            tessera_crdt::Settlement {
                period: request.period,
                through: vec![(NodeId(1), 3), (NodeId(2), 9)],
                totals: vec![(TenantId(5), Metric::Requests, 7)],
            }
            .part(None, 16),
        ),
        Message::DirectoryPush {
            delta: directory_delta.clone(),
            relay: false,
        },
        Message::Directory(directory.sync_start()),
        Message::Directory(SyncMessage::Ops {
            delta: directory_delta,
            digest: directory.version_vector().clone(),
        }),
        Message::EscrowPush(vec![(request, counter.clone())]),
        Message::EscrowDigest { root: 0xfeed_beef },
        Message::EscrowBuckets {
            buckets: (0..tessera_sync::escrow_digest::BUCKETS as u64).collect(),
        },
        Message::EscrowCounters {
            counters: vec![(request, counter.clone())],
            want: vec![0, 17, 255],
        },
        Message::RightsRequest {
            request_id: 7,
            key: request,
            want: 25,
        },
        Message::RightsReply {
            request_id: 7,
            key: request,
            given: 20,
            counter,
        },
        Message::Leaving,
        Message::Members {
            entries: vec![tessera_sync::membership::MemberEntry {
                node: NodeId(7),
                heartbeat: 1_764_000_000_000,
                left: false,
                addr: b"/ip4/10.0.0.7/tcp/7400/p2p/12D3KooW".to_vec(),
                ledger_seq: 42,
            }],
            answer: false,
        },
    ];
    for message in messages {
        seeds.add(message.kind(), &message.encode());
    }
    seeds.count
}

fn crdt_state(out: &Path) -> usize {
    let mut seeds = Seeds::new(out, "crdt_state");
    let (ledger, other, directory, counter, book) = states();
    seeds.add("ledger", &ledger.encode());
    seeds.add("ledger-one-node", &other.encode());
    seeds.add(
        "ledger-delta",
        &ledger.delta_since(other.version_vector(), 64).encode(),
    );
    seeds.add("version-vector", &ledger.version_vector().encode());
    seeds.add("bounded-counter", &counter.encode());
    seeds.add("escrow-book", &book.encode());
    seeds.add("directory", &directory.encode());
    seeds.add(
        "directory-delta",
        &directory.delta_since(&VersionVector::new(), 4).encode(),
    );
    seeds.add("directory-digest", &directory.sync_start().encode());
    seeds.count
}

fn admin_body(out: &Path) -> usize {
    let mut seeds = Seeds::new(out, "admin_body");
    for (route, body) in [
        (0u8, r#"{"name":"acme"}"#),
        (0, r#"{"name":"acme","home":"1f"}"#),
        (1, r#"{"status":"suspended"}"#),
        (2, r#"{"scopes":"resize,usage","label":"ci"}"#),
        (2, r#"{}"#),
        (3, r#"{"limit":1000}"#),
        (3, r#"{"limit":null}"#),
        (4, r#"{"origin":"https://images.example.com"}"#),
        (4, r#"{"origin":"http://127.0.0.1:8080","allowed":false}"#),
        (5, r#"{"options":"w=200&h=200&fit=cover"}"#),
        (5, r#"{"options":null}"#),
    ] {
        let mut input = vec![route];
        input.extend_from_slice(body.as_bytes());
        seeds.add(body, &input);
    }
    seeds.count
}
