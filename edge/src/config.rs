//! Node configuration: one typed struct, filled from defaults, then a TOML file, then
//! `TESSERA_*` environment variables, then command-line flags (later wins), and validated
//! once at start-up so a bad value stops the node with a message that names the key.
//!
//! Environment overrides address any key by its TOML path, sections joined by a double
//! underscore: `TESSERA_HTTP__BODY_BYTES_MAX=1048576` sets `http.body_bytes_max`. Doing this
//! generically (rather than one hand-written variable per field) means every bound in the
//! file can be set from the environment, and `deny_unknown_fields` turns a typo into an
//! error instead of a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_resize::Limits;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TESSERA_";

/// Variables with the prefix that are not configuration keys (read by clap or tracing, or,
/// in builds with the feature `fault-injection`, by `cli` for the clock offset).
const ENV_NOT_KEYS: &[&str] = &[
    "TESSERA_CONFIG",
    "TESSERA_LOG",
    "TESSERA_TOKEN",
    "TESSERA_NODE",
    "TESSERA_CA_FILE",
    "TESSERA_FAULT_CLOCK_OFFSET_MS",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Shape(toml::de::Error),
    #[error("invalid configuration: `{key}` {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Directory for the node's durable state (created at start if missing).
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub pool: PoolConfig,
    pub limits: LimitsConfig,
    pub output: OutputConfig,
    pub log: LogConfig,
    pub cluster: ClusterConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub quota: QuotaConfig,
    pub billing: BillingConfig,
    pub idempotency: IdempotencyConfig,
    pub fetch: FetchConfig,
    pub cache: CacheConfig,
    pub console: ConsoleConfig,
}

/// The operator console (`/console`): server-rendered pages behind an operator login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console; `false` answers its paths 404 like any unknown path.
    pub enabled: bool,
    /// How long a console session lasts after its login (the operator logs in again).
    pub session_ttl_ms: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl_ms: 8 * 3_600_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes of signed-URL results kept in memory; 0 disables the cache.
    pub bytes_max: usize,
    /// How long a result is served from the cache.
    pub ttl_s: u64,
    /// Bytes of results kept on disk in `<data_dir>/cache/` behind the memory tier
    /// (they survive a restart); 0 (the default) keeps no disk tier.
    pub disk_bytes_max: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            bytes_max: 64 << 20,
            ttl_s: 300,
            disk_bytes_max: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// DNS resolution and TCP connect, each.
    pub connect_timeout_ms: u64,
    /// The whole fetch (redirects, headers and body).
    pub timeout_ms: u64,
    /// Largest source accepted, enforced while streaming.
    pub bytes_max: usize,
    pub redirects_max: u32,
    /// Origins (`http://host[:port]`) allowed to resolve to loopback or private
    /// addresses (an internal image store); every other origin must resolve to public
    /// addresses.
    pub private_origins: Vec<String>,
    /// PEM files of extra root certificates trusted for `https://` origins (an internal
    /// CA), on top of the Mozilla root set.
    pub tls_roots_pem_files: Vec<PathBuf>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 2_000,
            timeout_ms: 10_000,
            bytes_max: 32 * 1024 * 1024,
            redirects_max: 3,
            private_origins: Vec::new(),
            tls_roots_pem_files: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a successful answer is kept for retries with the same `Idempotency-Key`.
    pub ttl_s: u64,
    pub entries_max: usize,
    /// Bytes of kept answers (image bodies) in all.
    pub bytes_max: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl_s: 86_400,
            entries_max: 100_000,
            bytes_max: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// libp2p listen addresses for replication (TCP only).
    pub listen: Vec<String>,
    /// Peers to dial (and redial with backoff), e.g. `/ip4/10.0.0.2/tcp/7400`. One is
    /// enough: the others are found through the member table it shares.
    pub bootstrap: Vec<String>,
    /// Addresses other members dial this node at (carried in the member table). Empty:
    /// the listeners' concrete addresses, routable ones first. Set it behind NAT or a
    /// load balancer.
    pub advertise: Vec<String>,
    /// Connections this node keeps at least, to random live members found by gossip
    /// (a bounded random mesh: not a star through the bootstrap node). 0: connections
    /// only to the bootstrap list, and requests only to connected peers.
    pub mesh_peers: usize,
    /// The 32-byte cluster key as 64 hex digits; only nodes holding it can connect.
    /// Empty: the node runs alone (no replication listener).
    pub cluster_key: String,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Largest replication message sent or accepted.
    pub message_bytes_max: usize,
    pub request_timeout_ms: u64,
    pub connections_max: u32,
    /// How long replication outputs may wait for the store before being dropped.
    pub durable_wait_ms: u64,
    /// A peer not heard from for this long is reported stale.
    pub peer_stale_ms: u64,
    /// Bootstrap peers are redialled after this long, doubling (with jitter) up to
    /// `redial_max_ms` while they stay unreachable.
    pub redial_base_ms: u64,
    pub redial_max_ms: u64,
    /// ...but at most this long for a peer that was connected before: a link lost to a
    /// partition or a restart is used again within about this long after it heals.
    pub redial_lost_max_ms: u64,
    /// An outbound dial (TCP connect and the whole handshake) must finish within this.
    pub dial_timeout_ms: u64,
    /// Every replication connection is pinged this often...
    pub ping_interval_ms: u64,
    /// ...and one that answered no ping for this long is closed, its peer reported
    /// disconnected (a partition that drops packets silently is seen within this).
    pub liveness_timeout_ms: u64,
    /// Inbound replication handshakes in progress, all addresses together; must exceed
    /// `pending_per_ip_max` (so one address cannot hold the port shut).
    pub pending_incoming_max: u32,
    /// Inbound handshakes in progress from one address (IPv6: one prefix).
    pub pending_per_ip_max: u32,
    /// Established inbound connections from one address.
    pub established_per_ip_max: u32,
    /// An inbound pnet + noise + yamux handshake must finish within this; one that does
    /// not counts as failed, and addresses that keep failing are backed off.
    pub handshake_timeout_ms: u64,
    /// How much of an IPv6 address names one remote (128 when nodes share a /64).
    pub ipv6_prefix_bits: u8,
    /// On SIGTERM/SIGINT, once in-flight requests are done, hand this node's unspent
    /// quota rights to connected peers before exiting (what `tessera cluster leave` does
    /// whatever this says). Off: a stopped node keeps its rights until it comes back, and
    /// the quota they stand for cannot be spent elsewhere meanwhile.
    pub leave_on_shutdown: bool,
    /// The hand-over's bound: making it durable, sending it, and handing over again what
    /// arrives meanwhile (answers to rights requests made just before, which stop one
    /// second after the last admission); rights still here when it ends stay here until
    /// the node returns. Comes after `http.shutdown_grace_ms`.
    pub leave_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Changes received from peers are written at least this often (own changes that a
    /// response waits for are written at once, batched with whatever else is pending).
    pub flush_interval_ms: u64,
    /// When the change log passes this size, the store folds it into a new snapshot
    /// (beside the writer, from the store: `control::store::LogCompactor`).
    pub log_bytes_max: u64,
    /// A billed request waits at most this long for its commit; past it, 503.
    pub commit_timeout_ms: u64,
    /// Usage records move from the store to their hourly files at least this often.
    pub records_interval_ms: u64,
    /// Hourly files of raw usage records are deleted this many days after their hour
    /// ends (0: kept for ever). The ledger's totals are kept apart from this
    /// (`billing.retention_days`).
    pub records_retention_days: u64,
    /// The directory's audit history is kept whole for this many days; older edits that
    /// later ones overwrote are folded to placeholders (creations, revocations, deletions
    /// and decommissions are kept). 0: never fold.
    pub audit_retention_days: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Serve `POST /v1/resize` without a key (unbilled). For benchmarks and local trials
    /// only.
    pub anonymous_resize: bool,
    /// SHA-256 digests (hex) of the operator tokens that may use the admin API. Empty: a
    /// token is generated at first start, printed once, and its digest kept in the store.
    pub operator_token_sha256: Vec<String>,
}

/// Billing periods' finality (docs/PROTOCOL.md, "Finality").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// This node seals its usage of every hour (so every month) that ended at least this
    /// long ago, and never writes it again; a period is final once every member sealed it.
    /// Must exceed `http.request_deadline_ms` + `store.commit_timeout_ms`.
    pub seal_grace_ms: u64,
    /// A final period is compacted this many days after it ends: its per-node usage is
    /// replaced by its totals, the same on every node (0: never). Raw usage records are
    /// kept as files, apart from this.
    pub retention_days: u64,
    /// A settlement (the totals a compacted period leaves) is forgotten this many days
    /// after its period ends (0: kept for ever). Above `retention_days`; a member offline
    /// for longer than this comes back with usage nobody counts any more.
    pub settlement_retention_days: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            seal_grace_ms: 600_000,
            retention_days: 92,
            settlement_retention_days: 760,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// When local rights are out but a connected peer holds some, a request waits this
    /// long for a transfer before it is refused with 429 `quota_unavailable`; cover one
    /// round trip between your farthest nodes (a node's first request for a tenant whose
    /// rights are all elsewhere pays one). With no connected peer holding rights, the
    /// refusal is immediate.
    pub transfer_wait_ms: u64,
    /// Per-tenant request rate on this node (token bucket); 0 disables it.
    pub rate_per_s: f64,
    /// Requests a tenant may make at once above the rate.
    pub rate_burst: f64,
    /// Tenants with a bucket at once (memory bound).
    pub rate_tenants_max: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/0.0.0.0/tcp/7400".to_owned()],
            bootstrap: Vec::new(),
            advertise: Vec::new(),
            mesh_peers: 8,
            cluster_key: String::new(),
            mdns: false,
            message_bytes_max: 1 << 20,
            request_timeout_ms: 5_000,
            connections_max: 64,
            durable_wait_ms: 5_000,
            peer_stale_ms: 30_000,
            redial_base_ms: 500,
            redial_max_ms: 30_000,
            redial_lost_max_ms: 500,
            dial_timeout_ms: 2_000,
            ping_interval_ms: 500,
            liveness_timeout_ms: 1_500,
            pending_incoming_max: 64,
            pending_per_ip_max: 4,
            established_per_ip_max: 16,
            handshake_timeout_ms: 3_000,
            ipv6_prefix_bits: 64,
            leave_on_shutdown: true,
            leave_timeout_ms: 2_000,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 200,
            log_bytes_max: 64 << 20,
            commit_timeout_ms: 5_000,
            records_interval_ms: 10_000,
            records_retention_days: 400,
            audit_retention_days: 365,
        }
    }
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            transfer_wait_ms: 250,
            rate_per_s: 0.0,
            rate_burst: 100.0,
            rate_tenants_max: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A client must send its complete request head within this time; it also closes idle
    /// keep-alive connections (slowloris and idle-connection protection).
    pub header_read_timeout_ms: u64,
    /// The whole body must arrive within this time after the head (slow uploads).
    pub body_read_timeout_ms: u64,
    /// Time budget of one resize request from its body fully received to its response
    /// ready: queueing plus processing. Work that cannot start in time is refused with 503.
    pub request_deadline_ms: u64,
    /// Largest accepted request body, enforced while streaming (chunked bodies too).
    pub body_bytes_max: usize,
    /// Bytes all request bodies held in memory may add up to; a body that would pass it
    /// is refused with 503. Keeps memory bounded under overload.
    pub buffered_bytes_max: usize,
    /// Largest admin API request body (JSON edits are small).
    pub admin_body_bytes_max: usize,
    /// Open connections, all clients together; beyond this a connection goes to the
    /// overflow lane (see `overflow_connections_max`).
    pub connections_max: usize,
    /// Open connections per client address (IPv6: per /64); 0 = no per-client cap (a node
    /// behind a proxy sees one address). Beyond it a connection goes to the overflow lane.
    pub connections_per_client_max: usize,
    /// Connections over a cap that are still answered once (health checks served, the
    /// rest a JSON 429/503 with Retry-After) instead of being closed at accept.
    pub overflow_connections_max: usize,
    /// Bytes of request bodies one tenant may hold in memory; 0 = a quarter of
    /// `buffered_bytes_max`.
    pub tenant_buffered_bytes_max: usize,
    /// On SIGTERM/SIGINT (or a leave), `/readyz` answers 503 at once but the node goes on
    /// accepting and serving for this long, so a load balancer sees it unready and stops
    /// sending before the listener closes (0: close at once). Set it to the balancer's
    /// health-check interval times its failure threshold.
    pub drain_delay_ms: u64,
    /// Then the listener closes and in-flight requests get this long to finish.
    pub shutdown_grace_ms: u64,
    /// PEM file of the certificate chain the listener serves TLS with (the node's own
    /// certificate first); set together with `tls_key_file`, or neither (plain HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// A TLS client must finish its handshake within this time after connecting, or the
    /// connection is closed (its place in the connection caps is held meanwhile).
    pub tls_handshake_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Resize worker threads; 0 means one per available core.
    pub workers: usize,
    /// Jobs waiting for a worker; beyond this, requests are refused at once with 503 (or
    /// push out the newest job of the tenant with the most work queued). 0 means 8 per
    /// worker.
    pub queue_max: usize,
    /// Jobs one tenant may have waiting; 0 means half of `queue_max` (at least 1).
    pub tenant_queue_max: usize,
    /// While every worker is busy, one extra thread runs the next job of a tenant with
    /// nothing running if it is predicted to take at most this long (a light tenant is
    /// not kept waiting behind a heavy tenant's long jobs); 0 = no express lane.
    pub express_cost_max_ms: u64,
    /// How many nice levels below the event loop the workers run (0 = same priority), so
    /// refusals and health checks are answered promptly while every core is busy.
    pub worker_niceness: i32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            queue_max: 0,
            tenant_queue_max: 0,
            express_cost_max_ms: 50,
            worker_niceness: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub width_max: u32,
    pub height_max: u32,
    pub pixels_max: u64,
    pub frames_max: u32,
    /// Largest frames × max(canvas, output) pixels of an animation kept animated.
    pub animation_pixels_max: u64,
    pub output_pixels_max: u64,
    /// Largest metadata item read or inflated (ICC profile, EXIF), and largest total of the
    /// JPEG segments kept, in bytes.
    pub metadata_bytes_max: u64,
    /// Largest estimated peak working memory of one job, in bytes.
    pub job_bytes_max: u64,
    /// Largest WebP output, in pixels.
    pub webp_output_pixels_max: u64,
    /// Largest AVIF output, in pixels (an AVIF encode cannot be interrupted).
    pub avif_output_pixels_max: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Quality used when a request gives no `q`.
    pub quality_default: u8,
    /// AVIF encoder speed (1 slow/small .. 10 fast); bounded so one request cannot take minutes.
    pub avif_speed: u8,
    /// `Cache-Control: max-age` on successful resize responses.
    pub cache_max_age_s: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `tessera_edge=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// Share of successful requests written to the request log (target
    /// `tessera::request`), 0 to 1; errors are always written, successful health,
    /// readiness and metrics probes never.
    pub requests_sample: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("tessera-data"),
            http: HttpConfig::default(),
            pool: PoolConfig::default(),
            limits: LimitsConfig::default(),
            output: OutputConfig::default(),
            log: LogConfig::default(),
            cluster: ClusterConfig::default(),
            store: StoreConfig::default(),
            auth: AuthConfig::default(),
            quota: QuotaConfig::default(),
            billing: BillingConfig::default(),
            idempotency: IdempotencyConfig::default(),
            fetch: FetchConfig::default(),
            cache: CacheConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            request_deadline_ms: 10_000,
            body_bytes_max: 32 * 1024 * 1024,
            buffered_bytes_max: 512 * 1024 * 1024,
            connections_max: 4_096,
            connections_per_client_max: 256,
            overflow_connections_max: 64,
            tenant_buffered_bytes_max: 0,
            drain_delay_ms: 0,
            shutdown_grace_ms: 15_000,
            admin_body_bytes_max: 64 << 10,
            tls_cert_file: None,
            tls_key_file: None,
            tls_handshake_timeout_ms: 10_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            width_max: limits.width_max,
            height_max: limits.height_max,
            pixels_max: limits.pixels_max,
            frames_max: limits.frames_max,
            animation_pixels_max: limits.animation_pixels_max,
            output_pixels_max: limits.output_pixels_max,
            metadata_bytes_max: limits.metadata_bytes_max,
            job_bytes_max: limits.job_bytes_max,
            webp_output_pixels_max: limits.webp_output_pixels_max,
            avif_output_pixels_max: limits.avif_output_pixels_max,
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            quality_default: 80,
            avif_speed: 9,
            cache_max_age_s: 31_536_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: "text".to_owned(),
            requests_sample: 1.0,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub workers: Option<usize>,
    pub log_format: Option<String>,
}

impl Config {
    /// Builds the configuration from every layer and validates it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            apply_env(&mut table, &name, &value)?;
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(ConfigError::Shape)?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(workers) = overrides.workers {
            config.pool.workers = workers;
        }
        if let Some(format) = &overrides.log_format {
            config.log.format.clone_from(format);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against its allowed range; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
            key: &'static str,
            value: T,
            min: T,
            max: T,
        ) -> Result<(), ConfigError> {
            if value < min || value > max {
                return Err(invalid(
                    key,
                    format!("is {value}; it must be between {min} and {max}"),
                ));
            }
            Ok(())
        }
        let hour_ms = 3_600_000;
        in_range(
            "http.header_read_timeout_ms",
            self.http.header_read_timeout_ms,
            1,
            hour_ms,
        )?;
        in_range(
            "http.body_read_timeout_ms",
            self.http.body_read_timeout_ms,
            1,
            hour_ms,
        )?;
        in_range(
            "http.request_deadline_ms",
            self.http.request_deadline_ms,
            1,
            hour_ms,
        )?;
        in_range(
            "http.admin_body_bytes_max",
            self.http.admin_body_bytes_max,
            1 << 10,
            16 << 20,
        )?;
        in_range(
            "http.shutdown_grace_ms",
            self.http.shutdown_grace_ms,
            0,
            hour_ms,
        )?;
        in_range("http.drain_delay_ms", self.http.drain_delay_ms, 0, hour_ms)?;
        // A certificate without its key (or the reverse) is a half-done TLS set-up: refused
        // rather than served in clear.
        match (&self.http.tls_cert_file, &self.http.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "http.tls_key_file",
                    "is not set but http.tls_cert_file is; set both (TLS) or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "http.tls_cert_file",
                    "is not set but http.tls_key_file is; set both (TLS) or neither",
                ))
            }
            _ => {}
        }
        in_range(
            "http.tls_handshake_timeout_ms",
            self.http.tls_handshake_timeout_ms,
            100,
            60_000,
        )?;
        in_range("http.body_bytes_max", self.http.body_bytes_max, 1, 1 << 30)?;
        in_range(
            "http.connections_max",
            self.http.connections_max,
            1,
            1 << 20,
        )?;
        in_range("pool.workers", self.pool.workers, 0, 1024)?;
        in_range("pool.queue_max", self.pool.queue_max, 0, 1 << 20)?;
        in_range(
            "pool.tenant_queue_max",
            self.pool.tenant_queue_max,
            0,
            1 << 20,
        )?;
        in_range(
            "pool.express_cost_max_ms",
            self.pool.express_cost_max_ms,
            0,
            10_000,
        )?;
        in_range(
            "http.connections_per_client_max",
            self.http.connections_per_client_max,
            0,
            1 << 20,
        )?;
        in_range(
            "http.overflow_connections_max",
            self.http.overflow_connections_max,
            0,
            1 << 16,
        )?;
        in_range("pool.worker_niceness", self.pool.worker_niceness, 0, 19)?;
        in_range("limits.width_max", self.limits.width_max, 1, 1 << 20)?;
        in_range("limits.height_max", self.limits.height_max, 1, 1 << 20)?;
        in_range("limits.pixels_max", self.limits.pixels_max, 1, 1 << 36)?;
        in_range("limits.frames_max", self.limits.frames_max, 1, 100_000)?;
        in_range(
            "limits.animation_pixels_max",
            self.limits.animation_pixels_max,
            1,
            1 << 40,
        )?;
        in_range(
            "limits.output_pixels_max",
            self.limits.output_pixels_max,
            1,
            1 << 32,
        )?;
        in_range(
            "limits.metadata_bytes_max",
            self.limits.metadata_bytes_max,
            1 << 10,
            1 << 30,
        )?;
        in_range(
            "limits.job_bytes_max",
            self.limits.job_bytes_max,
            1 << 20,
            1 << 40,
        )?;
        in_range(
            "limits.webp_output_pixels_max",
            self.limits.webp_output_pixels_max,
            1,
            1 << 32,
        )?;
        in_range(
            "limits.avif_output_pixels_max",
            self.limits.avif_output_pixels_max,
            1,
            1 << 32,
        )?;
        in_range(
            "output.quality_default",
            self.output.quality_default,
            1,
            100,
        )?;
        in_range("output.avif_speed", self.output.avif_speed, 1, 10)?;
        in_range(
            "console.session_ttl_ms",
            self.console.session_ttl_ms,
            60_000,
            30 * 24 * 3_600_000,
        )?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid(
                "log.format",
                format!("is {:?}; it must be \"text\" or \"json\"", self.log.format),
            ));
        }
        if !(0.0..=1.0).contains(&self.log.requests_sample) {
            return Err(invalid(
                "log.requests_sample",
                format!("is {}; it must be from 0 to 1", self.log.requests_sample),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        // One body must fit in a tenant's share of the memory budget, or a body over the
        // share would be refused as "retry later" forever.
        let share = self.tenant_buffered_bytes_max();
        if share > self.http.buffered_bytes_max {
            return Err(invalid(
                "http.tenant_buffered_bytes_max",
                format!(
                    "is {share}; it must not exceed http.buffered_bytes_max ({})",
                    self.http.buffered_bytes_max
                ),
            ));
        }
        for (key, bytes) in [
            ("http.body_bytes_max", self.http.body_bytes_max),
            ("fetch.bytes_max", self.fetch.bytes_max),
        ] {
            if bytes > share {
                return Err(invalid(
                    key,
                    format!(
                        "is {bytes}; one body must fit in a tenant's share of the body \
                         memory (http.tenant_buffered_bytes_max, effective {share})"
                    ),
                ));
            }
        }
        if !self.cluster.cluster_key.is_empty() && self.cluster_key().is_none() {
            return Err(invalid(
                "cluster.cluster_key",
                "must be 64 hex digits (32 bytes)",
            ));
        }
        for (key, list) in [
            ("cluster.listen", &self.cluster.listen),
            ("cluster.bootstrap", &self.cluster.bootstrap),
            ("cluster.advertise", &self.cluster.advertise),
        ] {
            for addr in list {
                if addr.parse::<tessera_sync::net::Multiaddr>().is_err() {
                    return Err(invalid(key, format!("{addr:?} is not a multiaddr")));
                }
            }
        }
        in_range(
            "cluster.message_bytes_max",
            self.cluster.message_bytes_max,
            64 << 10,
            64 << 20,
        )?;
        in_range(
            "cluster.request_timeout_ms",
            self.cluster.request_timeout_ms,
            10,
            hour_ms,
        )?;
        in_range(
            "cluster.connections_max",
            self.cluster.connections_max,
            1,
            10_000,
        )?;
        // Mesh connections count against the connection cap, with room left for peers
        // that dial in.
        in_range(
            "cluster.mesh_peers",
            self.cluster.mesh_peers,
            0,
            (self.cluster.connections_max / 2) as usize,
        )?;
        in_range(
            "cluster.pending_per_ip_max",
            self.cluster.pending_per_ip_max,
            1,
            10_000,
        )?;
        in_range(
            "cluster.pending_incoming_max",
            self.cluster.pending_incoming_max,
            self.cluster.pending_per_ip_max + 1,
            100_000,
        )?;
        in_range(
            "cluster.established_per_ip_max",
            self.cluster.established_per_ip_max,
            1,
            10_000,
        )?;
        in_range(
            "cluster.handshake_timeout_ms",
            self.cluster.handshake_timeout_ms,
            100,
            60_000,
        )?;
        in_range(
            "cluster.ipv6_prefix_bits",
            self.cluster.ipv6_prefix_bits,
            16,
            128,
        )?;
        in_range(
            "cluster.durable_wait_ms",
            self.cluster.durable_wait_ms,
            1,
            hour_ms,
        )?;
        in_range(
            "cluster.peer_stale_ms",
            self.cluster.peer_stale_ms,
            1,
            30 * 24 * hour_ms,
        )?;
        in_range(
            "cluster.redial_base_ms",
            self.cluster.redial_base_ms,
            1,
            hour_ms,
        )?;
        in_range(
            "cluster.redial_max_ms",
            self.cluster.redial_max_ms,
            self.cluster.redial_base_ms,
            hour_ms,
        )?;
        in_range(
            "cluster.redial_lost_max_ms",
            self.cluster.redial_lost_max_ms,
            self.cluster.redial_base_ms.min(self.cluster.redial_max_ms),
            self.cluster.redial_max_ms,
        )?;
        in_range(
            "cluster.dial_timeout_ms",
            self.cluster.dial_timeout_ms,
            100,
            60_000,
        )?;
        in_range(
            "cluster.ping_interval_ms",
            self.cluster.ping_interval_ms,
            50,
            60_000,
        )?;
        // A connection must get the chance to answer at least one ping before it is judged.
        in_range(
            "cluster.liveness_timeout_ms",
            self.cluster.liveness_timeout_ms,
            self.cluster.ping_interval_ms.saturating_mul(2),
            10 * 60_000,
        )?;
        in_range(
            "cluster.leave_timeout_ms",
            self.cluster.leave_timeout_ms,
            1,
            10 * 60_000,
        )?;
        in_range(
            "store.flush_interval_ms",
            self.store.flush_interval_ms,
            1,
            hour_ms,
        )?;
        in_range(
            "store.log_bytes_max",
            self.store.log_bytes_max,
            1 << 10,
            1 << 40,
        )?;
        in_range(
            "store.commit_timeout_ms",
            self.store.commit_timeout_ms,
            1,
            hour_ms,
        )?;
        in_range(
            "store.records_interval_ms",
            self.store.records_interval_ms,
            1,
            hour_ms,
        )?;
        in_range(
            "quota.transfer_wait_ms",
            self.quota.transfer_wait_ms,
            0,
            hour_ms,
        )?;
        in_range("quota.rate_per_s", self.quota.rate_per_s, 0.0, 1e9)?;
        in_range("quota.rate_burst", self.quota.rate_burst, 1.0, 1e9)?;
        in_range(
            "quota.rate_tenants_max",
            self.quota.rate_tenants_max,
            1,
            100_000_000,
        )?;
        // Usage billed just before a period ends is written before the seal: a request
        // runs at most its deadline, then waits at most the commit timeout.
        in_range(
            "billing.seal_grace_ms",
            self.billing.seal_grace_ms,
            (self.http.request_deadline_ms + self.store.commit_timeout_ms).saturating_add(1),
            30 * 24 * hour_ms,
        )?;
        in_range(
            "store.records_retention_days",
            self.store.records_retention_days,
            0,
            100 * 365,
        )?;
        in_range(
            "store.audit_retention_days",
            self.store.audit_retention_days,
            0,
            100 * 365,
        )?;
        in_range(
            "billing.retention_days",
            self.billing.retention_days,
            0,
            100 * 365,
        )?;
        if self.billing.settlement_retention_days != 0 {
            in_range(
                "billing.settlement_retention_days",
                self.billing.settlement_retention_days,
                self.billing.retention_days.max(1) + 1,
                100 * 365,
            )?;
        }
        in_range("idempotency.ttl_s", self.idempotency.ttl_s, 1, 30 * 86_400)?;
        in_range(
            "idempotency.entries_max",
            self.idempotency.entries_max,
            1,
            100_000_000,
        )?;
        in_range(
            "idempotency.bytes_max",
            self.idempotency.bytes_max,
            0,
            1 << 40,
        )?;
        for digest in &self.auth.operator_token_sha256 {
            if crate::control::auth::parse_digest(digest).is_none() {
                return Err(invalid(
                    "auth.operator_token_sha256",
                    "entries must be SHA-256 digests as 64 hex digits",
                ));
            }
        }
        in_range(
            "fetch.connect_timeout_ms",
            self.fetch.connect_timeout_ms,
            1,
            hour_ms,
        )?;
        in_range("fetch.timeout_ms", self.fetch.timeout_ms, 1, hour_ms)?;
        in_range("fetch.bytes_max", self.fetch.bytes_max, 1, 1 << 30)?;
        in_range("fetch.redirects_max", self.fetch.redirects_max, 0, 20)?;
        for path in &self.fetch.tls_roots_pem_files {
            crate::work::fetch::check_roots_file(path)
                .map_err(|e| invalid("fetch.tls_roots_pem_files", e.to_string()))?;
        }
        in_range("cache.bytes_max", self.cache.bytes_max, 0, 1 << 40)?;
        in_range("cache.ttl_s", self.cache.ttl_s, 1, 30 * 86_400)?;
        in_range(
            "cache.disk_bytes_max",
            self.cache.disk_bytes_max,
            0,
            1 << 50,
        )?;
        Ok(())
    }

    /// The fetch policy, with its TLS client (reads the extra root files).
    pub fn fetch_policy(&self) -> Result<crate::work::fetch::FetchPolicy, ConfigError> {
        let tls = crate::work::fetch::tls_client(&self.fetch.tls_roots_pem_files).map_err(|e| {
            ConfigError::Invalid {
                key: "fetch.tls_roots_pem_files",
                message: e.to_string(),
            }
        })?;
        Ok(crate::work::fetch::FetchPolicy {
            connect_timeout: Duration::from_millis(self.fetch.connect_timeout_ms),
            timeout: Duration::from_millis(self.fetch.timeout_ms),
            bytes_max: self.fetch.bytes_max,
            redirects_max: self.fetch.redirects_max,
            private_origins: self.fetch.private_origins.clone(),
            tls,
        })
    }

    /// The cluster key, when one is configured and well formed.
    pub fn cluster_key(&self) -> Option<[u8; 32]> {
        crate::control::auth::parse_digest(&self.cluster.cluster_key)
    }

    pub fn workers(&self) -> usize {
        match self.pool.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn queue_max(&self) -> usize {
        match self.pool.queue_max {
            0 => 8 * self.workers(),
            n => n,
        }
    }

    pub fn tenant_queue_max(&self) -> usize {
        match self.pool.tenant_queue_max {
            0 => (self.queue_max() / 2).max(1),
            n => n,
        }
    }

    pub fn pool_size(&self) -> crate::work::pool::PoolSize {
        crate::work::pool::PoolSize {
            workers: self.workers(),
            queue_max: self.queue_max(),
            tenant_queue_max: self.tenant_queue_max(),
            worker_niceness: self.pool.worker_niceness,
            express_cost_max: Duration::from_millis(self.pool.express_cost_max_ms),
        }
    }

    pub fn tenant_buffered_bytes_max(&self) -> usize {
        match self.http.tenant_buffered_bytes_max {
            0 => self.http.buffered_bytes_max / 4,
            n => n,
        }
    }

    pub fn resize_limits(&self) -> Limits {
        Limits {
            input_bytes_max: self.http.body_bytes_max,
            width_max: self.limits.width_max,
            height_max: self.limits.height_max,
            pixels_max: self.limits.pixels_max,
            frames_max: self.limits.frames_max,
            animation_pixels_max: self.limits.animation_pixels_max,
            output_pixels_max: self.limits.output_pixels_max,
            metadata_bytes_max: self.limits.metadata_bytes_max,
            job_bytes_max: self.limits.job_bytes_max,
            webp_output_pixels_max: self.limits.webp_output_pixels_max,
            avif_output_pixels_max: self.limits.avif_output_pixels_max,
        }
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http.body_read_timeout_ms)
    }

    pub fn request_deadline(&self) -> Duration {
        Duration::from_millis(self.http.request_deadline_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.http.drain_delay_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.http.shutdown_grace_ms)
    }

    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.http.tls_handshake_timeout_ms)
    }

    pub fn leave_timeout(&self) -> Duration {
        Duration::from_millis(self.cluster.leave_timeout_ms)
    }
}

/// Sets the key that `TESSERA_SECTION__KEY` names. The value is read as a TOML value when
/// it parses as one (numbers, booleans) and as a string otherwise (paths, addresses).
fn apply_env(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if ENV_NOT_KEYS.contains(&name) || rest.is_empty() {
        return Ok(());
    }
    let env_error = |message: String| ConfigError::Env {
        name: name.to_owned(),
        message,
    };
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(env_error("has an empty key segment".to_owned()));
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (leaf, sections) = path.split_last().expect("path has at least one segment");
    let mut node = table;
    for section in sections {
        let entry = node
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry
            .as_table_mut()
            .ok_or_else(|| env_error(format!("`{section}` is not a section")))?;
    }
    node.insert(leaf.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_cli_variables_are_not_configuration_keys() {
        // An operator exports these for the CLI and then starts a node in the same shell.
        let config = Config::load(
            None,
            env(&[("TESSERA_TOKEN", "top_x"), ("TESSERA_NODE", "http://n:1")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        let loaded = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(loaded, Config::default());
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\n[pool]\nworkers = 3\nqueue_max = 7\n[http]\nbody_bytes_max = 1000\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            env(&[
                ("TESSERA_POOL__QUEUE_MAX", "9"),
                ("TESSERA_DATA_DIR", "/tmp/x"),
                ("TESSERA_CONFIG", "ignored"),
                ("OTHER", "ignored"),
            ]),
            &Overrides {
                workers: Some(5),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.pool.workers, 5, "flag beats file");
        assert_eq!(config.pool.queue_max, 9, "env beats file");
        assert_eq!(config.http.body_bytes_max, 1000, "file beats default");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("TESSERA_POOL__WORKERS", "5000", "pool.workers"),
            ("TESSERA_HTTP__BODY_BYTES_MAX", "0", "http.body_bytes_max"),
            ("TESSERA_OUTPUT__AVIF_SPEED", "0", "output.avif_speed"),
            (
                "TESSERA_OUTPUT__QUALITY_DEFAULT",
                "101",
                "output.quality_default",
            ),
            ("TESSERA_LOG__FORMAT", "xml", "log.format"),
            ("TESSERA_HTTP__NO_SUCH_KEY", "1", "no_such_key"),
            ("TESSERA_LISTEN", "not-an-address", "listen"),
            ("TESSERA_POOL__WORKERS", "-1", "workers"),
            // A body that cannot fit in one tenant's share of the memory budget.
            (
                "TESSERA_HTTP__TENANT_BUFFERED_BYTES_MAX",
                "1048576",
                "http.body_bytes_max",
            ),
            (
                "TESSERA_CLUSTER__PENDING_INCOMING_MAX",
                "4",
                "cluster.pending_incoming_max",
            ),
            (
                "TESSERA_CLUSTER__LEAVE_TIMEOUT_MS",
                "0",
                "cluster.leave_timeout_ms",
            ),
            (
                "TESSERA_HTTP__TLS_HANDSHAKE_TIMEOUT_MS",
                "0",
                "http.tls_handshake_timeout_ms",
            ),
            // A certificate without its key.
            (
                "TESSERA_HTTP__TLS_CERT_FILE",
                "/etc/tessera/node.pem",
                "http.tls_key_file",
            ),
            // Totals forgotten before the period is even compacted.
            (
                "TESSERA_BILLING__SETTLEMENT_RETENTION_DAYS",
                "92",
                "billing.settlement_retention_days",
            ),
        ];
        for (name, value, expected) in cases {
            let err = Config::load(None, env(&[(name, value)]), &Overrides::default())
                .expect_err(name)
                .to_string();
            assert!(err.contains(expected), "{name}={value}: {err}");
        }
    }

    #[test]
    fn unreadable_and_malformed_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = Config::load(Some(&missing), Vec::new(), &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "listen = ").unwrap();
        let err = Config::load(Some(&bad), Vec::new(), &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn derived_sizes() {
        let mut config = Config::default();
        config.pool.workers = 3;
        assert_eq!(config.workers(), 3);
        assert_eq!(config.queue_max(), 24);
        config.pool.queue_max = 2;
        assert_eq!(config.queue_max(), 2);
        config.pool.workers = 0;
        assert!(config.workers() >= 1);
    }
}
