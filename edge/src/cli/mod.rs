//! The `tessera` command: `tessera serve` runs a node; `tessera config` prints the
//! effective configuration after every layer (file, environment, flags) is applied; the
//! other commands (`tenant`, `key`, `secret`, `origin`, `quota`, `preset`, `watermark`, `usage`,
//! `cluster status|leave|decommission`) talk to a node's admin API, printing tables for
//! people and JSON with `--json`; `token new` mints an operator token offline.
//!
//! It lives in the library so that every binary that is "a tessera" runs the same code:
//! `edge/src/main.rs` and the fault harness's shim (`tests/src/bin/tessera.rs`, which
//! `CARGO_BIN_EXE_tessera` can then name from the multi-process suites).
//!
//! `anyhow` lives here and only here: the command line reports errors to a human, the
//! other modules return typed errors.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

pub mod client;

use crate::config::{Config, Overrides};
use crate::http::server;
use client::Client;
use hyper::Method;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera edge node: image resizing at the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: serve HTTP until SIGTERM or SIGINT.
    Serve(ConfigArgs),
    /// Print the effective configuration as TOML and exit.
    Config(ConfigArgs),
    /// Tenants: create, list, show, suspend, activate, delete, history.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// API keys: create (the key is shown once), revoke.
    Key {
        #[command(subcommand)]
        action: KeyAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// URL-signing secrets: add (shown once), primary, retire.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Allowed source origins for signed URLs.
    Origin {
        #[command(subcommand)]
        action: OriginAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Hard quotas (requests or bytes_in, per month or hour).
    Quota {
        #[command(subcommand)]
        action: QuotaAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Named sets of resize options.
    Preset {
        #[command(subcommand)]
        action: PresetAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// A tenant's watermark image (drawn by `watermark=` on its requests).
    Watermark {
        #[command(subcommand)]
        action: WatermarkAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Merged usage of a tenant, with each node's contribution and freshness.
    Usage {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// Billing period, e.g. 2026-11 (default: the current month).
        #[arg(long)]
        period: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cluster members, freshness, replication lag; escrow rights with --tenant; leave;
    /// decommission a dead member.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Export this node's raw usage records (jsonl or parquet) or merged totals (jsonl).
    Export {
        #[command(subcommand)]
        what: ExportWhat,
        /// Where to write (default: standard output).
        #[arg(long, global = true)]
        out: Option<PathBuf>,
        /// jsonl, or parquet (records only).
        #[arg(long, global = true, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        #[command(flatten)]
        remote: Remote,
    },
    /// Operator tokens (offline).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print a shell completion script, e.g. `tessera completions bash >
    /// /etc/bash_completion.d/tessera`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `tessera man > /usr/share/man/man1/tessera.1`.
    Man,
    /// Sign an image URL for a tenant (offline): prints the URL, or its path without
    /// --base. The scheme, for signing elsewhere, is in README.md ("Signed URLs").
    Sign {
        /// The tenant's id.
        tenant: u64,
        /// Resize options joined by `,`, e.g. `w=400,h=300,fit=cover` (`_` for none;
        /// `preset=<name>` names a preset).
        options: String,
        /// The source image's URL, on one of the tenant's allowed origins.
        source: String,
        /// The signing secret as `tessera secret add` printed it (hex digits: the HMAC
        /// key is the bytes they encode).
        #[arg(long)]
        secret: String,
        /// Valid for this many seconds from now (adds `exp=<unix seconds>`).
        #[arg(long)]
        ttl_s: Option<u64>,
        /// A node's base URL (e.g. `https://img.example.com`) to print a whole URL.
        #[arg(long)]
        base: Option<String>,
    },
}

/// Where the admin commands go and how they print.
#[derive(Args)]
struct Remote {
    /// The node's admin address: http://host[:port], or https://host[:port] to reach it
    /// over TLS (do that whenever the token crosses a network).
    #[arg(
        long,
        global = true,
        env = "TESSERA_NODE",
        default_value = "http://127.0.0.1:8080"
    )]
    node: String,
    /// PEM file of roots to trust for an https:// node besides the Mozilla set (a node
    /// behind a private CA); may be repeated (one file may hold several roots).
    #[arg(long, global = true, env = "TESSERA_CA_FILE")]
    ca_file: Vec<PathBuf>,
    /// Operator token (or a tenant key with the usage scope, for `usage`).
    #[arg(long, global = true, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the node's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up after this many milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// A tenant, by its id as `tenant create` and `tenant list` print it.
const TENANT_HELP: &str = "The tenant's id (as `tenant create` and `tenant list` print it)";

#[derive(Subcommand)]
enum TenantAction {
    /// Create a tenant; prints its id.
    Create {
        /// A name for people (the id is what the API uses).
        name: String,
        /// Home node (hex id) that turns quotas into escrow grants; default: the node
        /// the command talks to.
        #[arg(long)]
        home: Option<String>,
    },
    /// List every live tenant.
    List,
    /// A tenant's keys, secrets, origins, quotas and presets.
    Show {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Refuse its requests until activated again (keys and usage are kept).
    Suspend {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Serve a suspended tenant again.
    Activate {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Delete a tenant for good (its usage stays in the bill).
    Delete {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Every edit of a tenant, by whom, when and on which node.
    History {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create an API key; it is printed once (only its digest is kept).
    Create {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// Comma-separated: resize, usage (at least one).
        #[arg(long, default_value = "resize")]
        scopes: String,
        /// A note for people (e.g. which service holds it).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// The tenant's keys (revoked ones included).
    List {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Revoke a key: refused on every node once the edit reaches it.
    Revoke {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// The key's id, as `key create` and `tenant show` print it.
        key: String,
    },
}

#[derive(Subcommand)]
enum SecretAction {
    /// Add a URL-signing secret; it is printed once.
    Add {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// The tenant's signing secrets (ids and state; the secrets are never shown again).
    List {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Make a secret the one the tenant's tools should sign with.
    Primary {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// The secret's id, as `secret add` and `tenant show` print it.
        secret: String,
    },
    /// Retire a secret: URLs signed with it are refused from then on.
    Retire {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// The secret's id, as `secret add` and `tenant show` print it.
        secret: String,
    },
}

#[derive(Subcommand)]
enum OriginAction {
    /// Allow signed URLs to fetch from an origin.
    Allow {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// scheme://host[:port], e.g. https://images.example.com
        origin: String,
    },
    /// The origins the tenant's signed URLs may fetch from.
    List {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Stop allowing an origin.
    Deny {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// scheme://host[:port], as allowed.
        origin: String,
    },
}

/// What a quota counts (the ones enforceable before any work is done).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum QuotaMetric {
    Requests,
    #[value(name = "bytes_in")]
    BytesIn,
}

impl QuotaMetric {
    fn name(self) -> &'static str {
        match self {
            QuotaMetric::Requests => "requests",
            QuotaMetric::BytesIn => "bytes_in",
        }
    }
}

/// The period a quota resets at.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum QuotaPeriod {
    Month,
    Hour,
}

impl QuotaPeriod {
    fn name(self) -> &'static str {
        match self {
            QuotaPeriod::Month => "month",
            QuotaPeriod::Hour => "hour",
        }
    }
}

/// The format of an export.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExportFormat {
    Jsonl,
    Parquet,
}

#[derive(Subcommand)]
enum QuotaAction {
    /// Set a hard quota, cluster-wide, per period.
    Set {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// What it counts.
        #[arg(long, value_enum, default_value_t = QuotaMetric::Requests)]
        metric: QuotaMetric,
        /// When it resets.
        #[arg(long, value_enum, default_value_t = QuotaPeriod::Month)]
        period: QuotaPeriod,
        /// How many per period (requests, or bytes received).
        #[arg(long)]
        limit: u64,
    },
    /// The tenant's quotas (`cluster status --tenant` shows what is used, node by node).
    List {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Remove a quota.
    Clear {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// What it counts.
        #[arg(long, value_enum, default_value_t = QuotaMetric::Requests)]
        metric: QuotaMetric,
        /// When it resets.
        #[arg(long, value_enum, default_value_t = QuotaPeriod::Month)]
        period: QuotaPeriod,
    },
}

#[derive(Subcommand)]
enum PresetAction {
    /// Name a set of resize options (used as `preset=<name>` in signed URLs).
    Set {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// The preset's name.
        name: String,
        /// A resize query string, e.g. `w=400&h=400&fit=cover`.
        options: String,
    },
    /// The tenant's presets.
    List {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
    /// Remove a preset.
    Clear {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// The preset's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum WatermarkAction {
    /// Set the watermark from an image file (PNG, WebP, GIF or JPEG; at most 16 KiB).
    Set {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// The image file.
        file: PathBuf,
    },
    /// Write the watermark file to `--out` (default: standard output).
    Get {
        #[arg(help = TENANT_HELP)]
        tenant: String,
        /// Where to write the file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Remove the watermark.
    Clear {
        #[arg(help = TENANT_HELP)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Members, connected, last heard, replication lag, stale or decommissioned.
    Status {
        /// Also show the quota rights each node holds for this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Stop the node as on SIGTERM, handing its unspent quota rights to its peers first
    /// (whatever `cluster.leave_on_shutdown` says).
    Leave,
    /// Retire a member that is gone for good (dead, data lost): it stops counting as
    /// stale and the quota rights stranded with it are recovered. Final.
    Decommission {
        // Not named `node`: that is the name of `--node`, the URL of the node to ask.
        /// The member's node id, 16 hex digits as `cluster status` prints it.
        node_id: String,
    },
}

#[derive(Subcommand)]
enum ExportWhat {
    /// Every request this node billed.
    Records {
        /// From this time, Unix ms (inclusive).
        #[arg(long)]
        from_ms: Option<u64>,
        /// Until this time, Unix ms (exclusive).
        #[arg(long)]
        to_ms: Option<u64>,
    },
    /// Merged totals per tenant for a period.
    Totals {
        /// Billing period, e.g. 2026-11 (default: the current month).
        #[arg(long)]
        period: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Mint an operator token; put its digest in `auth.operator_token_sha256`.
    New,
}

#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file (every key optional; defaults apply).
    #[arg(long, short, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for the node's durable state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Resize worker threads (0 = one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Log format: text or json.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            workers: self.workers,
            log_format: self.log_format.clone(),
        };
        Ok(Config::load(
            self.config.as_deref(),
            std::env::vars(),
            &overrides,
        )?)
    }
}

/// Parses the process's arguments and runs the command they name.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // A command's output piped into `head` ends quietly when the reader leaves, as
        // other command-line tools do, instead of panicking on the broken pipe. (The
        // node keeps Rust's default: a write to a closed socket is an error it handles.)
        // SAFETY: restoring a signal's default disposition, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Config(args) => {
            let mut config = args.load()?;
            // The effective configuration without its secrets: it is pasted into tickets.
            if !config.cluster.cluster_key.is_empty() {
                config.cluster.cluster_key = "(set; not shown)".to_owned();
            }
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Serve(args) => serve(args.load()?),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tessera",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Sign {
            tenant,
            options,
            source,
            secret,
            ttl_s,
            base,
        } => {
            let key = crate::control::auth::parse_digest(secret.trim()).context(
                "--secret must be the secret's 64 hex digits, as `tessera secret add` printed them",
            )?;
            let mut options = if options.is_empty() || options == "_" {
                Vec::new()
            } else {
                vec![options]
            };
            if let Some(ttl_s) = ttl_s {
                let now_s = crate::control::now_ms() / 1000;
                options.push(format!("exp={}", now_s.saturating_add(ttl_s)));
            }
            let path = crate::http::signed::signed_path(
                tessera_crdt::TenantId(tenant),
                &key,
                &options.join(","),
                &source,
            );
            match base {
                Some(base) => println!("{}{path}", base.trim_end_matches('/')),
                None => println!("{path}"),
            }
            Ok(())
        }
        Command::Token {
            action: TokenAction::New,
        } => {
            let (token, digest) = crate::control::auth::new_operator_token();
            println!("token:  {token}\nsha256: {digest}");
            println!(
                "(configure the digest on every node: auth.operator_token_sha256 = [\"{digest}\"],"
            );
            println!(
                " or TESSERA_AUTH__OPERATOR_TOKEN_SHA256='[\"{digest}\"]'; keep the token secret)"
            );
            Ok(())
        }
        Command::Export {
            what,
            out,
            format,
            remote,
        } => export(what, out, format, &remote),
        Command::Watermark { action, remote } => watermark(action, &remote),
        command => admin(command),
    }
}

/// A path segment of an admin URL, percent-encoded: an argument is never read as more
/// path (`../`, `/`, `?` or `#` in it stay inside its segment).
fn segment(value: impl std::fmt::Display) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let text = value.to_string();
    // `.` and `..` alone would still be dot segments: encode their dots too.
    if text.chars().all(|c| c == '.') {
        return text.replace('.', "%2E");
    }
    percent_encoding::utf8_percent_encode(&text, SEGMENT).to_string()
}

/// A query string value of an admin URL, form-encoded (`&`, `=`, `#` and spaces in it
/// stay inside the value).
fn query_value(value: impl std::fmt::Display) -> String {
    form_urlencoded::byte_serialize(value.to_string().as_bytes()).collect()
}

/// `GET` of one tenant's detail, shown through `view` (`tenant show` and the `list`
/// commands read parts of the same answer).
fn tenant_detail(
    remote: Remote,
    tenant: &str,
    view: View,
) -> (Remote, Method, String, Option<serde_json::Value>, View) {
    (
        remote,
        Method::GET,
        format!("/admin/v1/tenants/{}", segment(tenant)),
        None,
        view,
    )
}

/// One admin API call from the command line.
fn admin(command: Command) -> anyhow::Result<()> {
    use serde_json::json;
    use Method as M;
    let (remote, method, path, body, view): (
        Remote,
        Method,
        String,
        Option<serde_json::Value>,
        View,
    ) = match command {
        Command::Tenant { action, remote } => match action {
            TenantAction::Create { name, home } => (
                remote,
                M::POST,
                "/admin/v1/tenants".into(),
                Some(json!({ "name": name, "home": home })),
                View::Record,
            ),
            TenantAction::List => (
                remote,
                M::GET,
                "/admin/v1/tenants".into(),
                None,
                View::List("tenants", &["id", "name", "status", "home"]),
            ),
            TenantAction::Show { tenant } => tenant_detail(remote, &tenant, View::Record),
            TenantAction::Suspend { tenant } => (
                remote,
                M::POST,
                format!("/admin/v1/tenants/{}/status", segment(&tenant)),
                Some(json!({ "status": "suspended" })),
                View::Done,
            ),
            TenantAction::Activate { tenant } => (
                remote,
                M::POST,
                format!("/admin/v1/tenants/{}/status", segment(&tenant)),
                Some(json!({ "status": "active" })),
                View::Done,
            ),
            TenantAction::Delete { tenant } => (
                remote,
                M::DELETE,
                format!("/admin/v1/tenants/{}", segment(&tenant)),
                None,
                View::Done,
            ),
            TenantAction::History { tenant } => (
                remote,
                M::GET,
                format!("/admin/v1/tenants/{}/history", segment(&tenant)),
                None,
                View::List("history", &["at_ms", "actor", "node", "change"]),
            ),
        },
        Command::Key { action, remote } => match action {
            KeyAction::Create {
                tenant,
                scopes,
                label,
            } => (
                remote,
                M::POST,
                format!("/admin/v1/tenants/{}/keys", segment(&tenant)),
                Some(json!({ "scopes": scopes, "label": label })),
                View::Record,
            ),
            KeyAction::List { tenant } => tenant_detail(
                remote,
                &tenant,
                View::List("keys", &["id", "prefix", "label", "scopes", "revoked"]),
            ),
            KeyAction::Revoke { tenant, key } => (
                remote,
                M::DELETE,
                format!(
                    "/admin/v1/tenants/{}/keys/{}",
                    segment(&tenant),
                    segment(&key)
                ),
                None,
                View::Done,
            ),
        },
        Command::Secret { action, remote } => match action {
            SecretAction::Add { tenant } => (
                remote,
                M::POST,
                format!("/admin/v1/tenants/{}/secrets", segment(&tenant)),
                None,
                View::Record,
            ),
            SecretAction::List { tenant } => tenant_detail(
                remote,
                &tenant,
                View::List("signing_secrets", &["id", "active", "primary"]),
            ),
            SecretAction::Primary { tenant, secret } => (
                remote,
                M::POST,
                format!(
                    "/admin/v1/tenants/{}/secrets/{}/primary",
                    segment(&tenant),
                    segment(&secret)
                ),
                None,
                View::Done,
            ),
            SecretAction::Retire { tenant, secret } => (
                remote,
                M::DELETE,
                format!(
                    "/admin/v1/tenants/{}/secrets/{}",
                    segment(&tenant),
                    segment(&secret)
                ),
                None,
                View::Done,
            ),
        },
        Command::Origin { action, remote } => match action {
            OriginAction::Allow { tenant, origin } => (
                remote,
                M::PUT,
                format!("/admin/v1/tenants/{}/origins", segment(&tenant)),
                Some(json!({ "origin": origin, "allowed": true })),
                View::Done,
            ),
            OriginAction::List { tenant } => {
                tenant_detail(remote, &tenant, View::Values("origins"))
            }
            OriginAction::Deny { tenant, origin } => (
                remote,
                M::PUT,
                format!("/admin/v1/tenants/{}/origins", segment(&tenant)),
                Some(json!({ "origin": origin, "allowed": false })),
                View::Done,
            ),
        },
        Command::Quota { action, remote } => match action {
            QuotaAction::Set {
                tenant,
                metric,
                period,
                limit,
            } => (
                remote,
                M::PUT,
                format!(
                    "/admin/v1/tenants/{}/quotas/{}/{}",
                    segment(&tenant),
                    segment(metric.name()),
                    segment(period.name())
                ),
                Some(json!({ "limit": limit })),
                View::Done,
            ),
            QuotaAction::List { tenant } => tenant_detail(
                remote,
                &tenant,
                View::List("quotas", &["metric", "period", "limit"]),
            ),
            QuotaAction::Clear {
                tenant,
                metric,
                period,
            } => (
                remote,
                M::PUT,
                format!(
                    "/admin/v1/tenants/{}/quotas/{}/{}",
                    segment(&tenant),
                    segment(metric.name()),
                    segment(period.name())
                ),
                Some(json!({ "limit": null })),
                View::Done,
            ),
        },
        Command::Preset { action, remote } => match action {
            PresetAction::Set {
                tenant,
                name,
                options,
            } => (
                remote,
                M::PUT,
                format!(
                    "/admin/v1/tenants/{}/presets/{}",
                    segment(&tenant),
                    segment(&name)
                ),
                Some(json!({ "options": options })),
                View::Done,
            ),
            PresetAction::List { tenant } => {
                tenant_detail(remote, &tenant, View::Pairs("presets", ["name", "options"]))
            }
            PresetAction::Clear { tenant, name } => (
                remote,
                M::PUT,
                format!(
                    "/admin/v1/tenants/{}/presets/{}",
                    segment(&tenant),
                    segment(&name)
                ),
                Some(json!({ "options": null })),
                View::Done,
            ),
        },
        Command::Usage {
            tenant,
            period,
            remote,
        } => {
            let mut path = format!("/admin/v1/usage?tenant={}", query_value(&tenant));
            if let Some(period) = period {
                path.push_str(&format!("&period={}", query_value(&period)));
            }
            (remote, M::GET, path, None, View::Usage)
        }
        Command::Cluster {
            action: ClusterAction::Status { tenant },
            remote,
        } => {
            let path = match tenant {
                Some(tenant) => format!("/admin/v1/cluster?tenant={}", query_value(&tenant)),
                None => "/admin/v1/cluster".into(),
            };
            (remote, M::GET, path, None, View::Cluster)
        }
        Command::Cluster {
            action: ClusterAction::Leave,
            remote,
        } => (
            remote,
            M::POST,
            "/admin/v1/cluster/leave".into(),
            None,
            View::Record,
        ),
        Command::Cluster {
            action: ClusterAction::Decommission { node_id },
            remote,
        } => (
            remote,
            M::POST,
            "/admin/v1/cluster/decommission".into(),
            Some(json!({ "node": node_id })),
            View::Record,
        ),
        Command::Serve(_)
        | Command::Config(_)
        | Command::Token { .. }
        | Command::Sign { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::Export { .. }
        | Command::Watermark { .. } => {
            unreachable!("handled in main")
        }
    };
    let (client, runtime) = connect(&remote)?;
    let (status, answer) = if path == "/admin/v1/tenants" && method == M::GET {
        runtime.block_on(all_pages(&client, &path, "tenants"))?
    } else {
        runtime.block_on(client.call(method, &path, body))?
    };
    if !status.is_success() {
        let code = answer["error"]["code"].as_str().unwrap_or("error");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        if remote.json {
            println!("{answer}");
        }
        anyhow::bail!("{status}: {code}: {message}");
    }
    if remote.json {
        let shown = match view.field() {
            // A listing drawn from a larger answer (the tenant's detail): its part only.
            Some(field)
                if path.starts_with("/admin/v1/tenants/") && path.matches('/').count() == 4 =>
            {
                &answer[field]
            }
            _ => &answer,
        };
        println!("{}", serde_json::to_string_pretty(shown)?);
        return Ok(());
    }
    print!("{}", render(&view, &answer));
    Ok(())
}

/// Every page of a paginated listing (`next` is the cursor of the page after), as one
/// answer with every item under `field`; the first refusal as it came.
async fn all_pages(
    client: &Client,
    path: &str,
    field: &str,
) -> anyhow::Result<(hyper::StatusCode, serde_json::Value)> {
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page_path = match &next {
            Some(after) => format!("{path}?after={}", query_value(after)),
            None => path.to_owned(),
        };
        let (status, mut answer) = client.call(Method::GET, &page_path, None).await?;
        if !status.is_success() {
            return Ok((status, answer));
        }
        if let Some(page) = answer[field].as_array_mut() {
            items.append(page);
        }
        match answer["next"].as_str() {
            Some(after) => next = Some(after.to_owned()),
            None => return Ok((status, serde_json::json!({ field: items }))),
        }
    }
}

fn export(
    what: ExportWhat,
    out: Option<PathBuf>,
    format: ExportFormat,
    remote: &Remote,
) -> anyhow::Result<()> {
    let format = match format {
        ExportFormat::Jsonl => "jsonl",
        ExportFormat::Parquet => "parquet",
    };
    let path = match what {
        ExportWhat::Records { from_ms, to_ms } => {
            let mut path = format!("/admin/v1/export/records?format={format}");
            if let Some(from) = from_ms {
                path.push_str(&format!("&from_ms={from}"));
            }
            if let Some(to) = to_ms {
                path.push_str(&format!("&to_ms={to}"));
            }
            path
        }
        ExportWhat::Totals { period } => match period {
            Some(period) => format!(
                "/admin/v1/export/totals?format={format}&period={}",
                query_value(&period)
            ),
            None => format!("/admin/v1/export/totals?format={format}"),
        },
    };
    let (client, runtime) = connect(remote)?;
    let (status, body) = runtime.block_on(client.call_raw(Method::GET, &path, None))?;
    if !status.is_success() {
        anyhow::bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    match out {
        Some(file) => {
            std::fs::write(&file, &body).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("wrote {} bytes to {}", body.len(), file.display());
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&body)?;
        }
    }
    Ok(())
}

/// `tessera watermark set|get|clear`: the file travels as it is, not in JSON.
fn watermark(action: WatermarkAction, remote: &Remote) -> anyhow::Result<()> {
    let path = |tenant: &str| format!("/admin/v1/tenants/{}/watermark", segment(tenant));
    let (client, runtime) = connect(remote)?;
    let (status, body, out) = match action {
        WatermarkAction::Set { tenant, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = path(&tenant);
            let call =
                client.call_bytes(Method::PUT, &path, bytes.into(), "application/octet-stream");
            let (status, body) = runtime.block_on(call)?;
            (status, body, None)
        }
        WatermarkAction::Get { tenant, out } => {
            let (status, body) =
                runtime.block_on(client.call_raw(Method::GET, &path(&tenant), None))?;
            (status, body, Some(out))
        }
        WatermarkAction::Clear { tenant } => {
            let (status, body) =
                runtime.block_on(client.call_raw(Method::DELETE, &path(&tenant), None))?;
            (status, body, None)
        }
    };
    if !status.is_success() {
        anyhow::bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    match out {
        Some(Some(file)) => {
            std::fs::write(&file, &body).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("wrote {} bytes to {}", body.len(), file.display());
        }
        Some(None) => {
            use std::io::Write;
            std::io::stdout().write_all(&body)?;
        }
        None => println!("ok"),
    }
    Ok(())
}

/// The admin API client for `remote`, and a runtime to drive it.
fn connect(remote: &Remote) -> anyhow::Result<(Client, tokio::runtime::Runtime)> {
    if remote.token.is_none() {
        anyhow::bail!(
            "no operator token: set TESSERA_TOKEN or pass --token (a new node writes one to \
             <data-dir>/operator-token at its first start; `tessera token new` mints one offline)"
        );
    }
    let client = Client::new(
        &remote.node,
        remote.token.clone(),
        Duration::from_millis(remote.timeout_ms),
        &remote.ca_file,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok((client, runtime))
}

/// How an answer is shown to a person.
enum View {
    Done,
    Record,
    /// A field holding an array of objects: a table of these columns.
    List(&'static str, &'static [&'static str]),
    /// A field holding an array of strings: one a line.
    Values(&'static str),
    /// A field holding an object: a two-column table, key then value.
    Pairs(&'static str, [&'static str; 2]),
    Usage,
    Cluster,
}

impl View {
    /// The part of the answer this view shows (with `--json`, printed as is).
    fn field(&self) -> Option<&'static str> {
        match self {
            View::List(field, _) | View::Values(field) | View::Pairs(field, _) => Some(field),
            _ => None,
        }
    }
}

fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A plain text table: a header row and left-aligned columns.
fn table(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            widths[i] = widths[i].max(value.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, values: &[String]| {
        let cells: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v:<width$}", width = widths[i]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    };
    line(
        &mut out,
        &columns.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>(),
    );
    for row in rows {
        line(&mut out, row);
    }
    out
}

fn render(view: &View, answer: &serde_json::Value) -> String {
    match view {
        View::Done => "ok\n".into(),
        View::Record => match answer.as_object() {
            Some(map) => map
                .iter()
                .map(|(k, v)| match v {
                    // One level of nesting reads as `outer.inner: value` lines.
                    serde_json::Value::Object(inner) => inner
                        .iter()
                        .map(|(ik, iv)| format!("{k}.{ik}: {}\n", cell(iv)))
                        .collect(),
                    serde_json::Value::Array(_) => format!("{k}: {v}\n"),
                    _ => format!("{k}: {}\n", cell(v)),
                })
                .collect(),
            None => format!("{answer}\n"),
        },
        View::List(field, columns) => {
            let rows: Vec<Vec<String>> = answer[*field]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|item| columns.iter().map(|c| cell(&item[*c])).collect())
                        .collect()
                })
                .unwrap_or_default();
            table(columns, &rows)
        }
        View::Values(field) => answer[*field]
            .as_array()
            .map(|items| items.iter().map(|v| format!("{}\n", cell(v))).collect())
            .unwrap_or_default(),
        View::Pairs(field, columns) => {
            let rows: Vec<Vec<String>> = answer[*field]
                .as_object()
                .map(|map| map.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect())
                .unwrap_or_default();
            table(columns, &rows)
        }
        View::Usage => {
            let mut out = format!(
                "tenant {} period {}{}{}\n",
                cell(&answer["tenant"]),
                cell(&answer["period"]),
                if answer["final"].as_bool() == Some(true) {
                    "  FINAL"
                } else {
                    "  (not final)"
                },
                if answer["stale"].as_bool() == Some(true) {
                    "  (INCOMPLETE: some node is stale)"
                } else {
                    ""
                }
            );
            if let Some(missing) = answer["missing_seals"].as_array() {
                let waiting: Vec<String> = missing
                    .iter()
                    .map(|m| match m["last_heard_age_ms"].as_u64() {
                        Some(age_ms) => format!("{} (heard {age_ms} ms ago)", cell(&m["node"])),
                        None => format!("{} (never heard)", cell(&m["node"])),
                    })
                    .collect();
                if !waiting.is_empty() && answer["final"].as_bool() == Some(false) {
                    out.push_str(&format!(
                        "waiting for the seals of: {}\n",
                        waiting.join(", ")
                    ));
                }
            }
            let metrics = ["requests", "cpu_micros", "bytes_in", "bytes_out"];
            let mut rows = Vec::new();
            if let Some(nodes) = answer["nodes"].as_array() {
                for node in nodes {
                    let mut row = vec![cell(&node["node"])];
                    row.extend(metrics.iter().map(|m| cell(&node["usage"][*m])));
                    row.push(cell(&node["last_heard_age_ms"]));
                    row.push(if node["stale"].as_bool() == Some(true) {
                        "stale".into()
                    } else {
                        String::new()
                    });
                    rows.push(row);
                }
            }
            let mut total = vec!["TOTAL".to_owned()];
            total.extend(metrics.iter().map(|m| cell(&answer["totals"][*m])));
            total.extend([String::new(), String::new()]);
            rows.push(total);
            out.push_str(&table(
                &[
                    "node",
                    "requests",
                    "cpu_micros",
                    "bytes_in",
                    "bytes_out",
                    "heard_ms_ago",
                    "",
                ],
                &rows,
            ));
            out
        }
        View::Cluster => {
            let mut out = format!(
                "this node {} (peer {})\n",
                cell(&answer["node"]["id"]),
                cell(&answer["node"]["peer_id"])
            );
            let columns = [
                "node",
                "connected",
                "last_heard_age_ms",
                "replication_lag_ms",
                "messages_sent",
                "messages_received",
                "stale",
                "decommissioned",
            ];
            let rows: Vec<Vec<String>> = answer["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|item| columns.iter().map(|c| cell(&item[*c])).collect())
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&table(&columns, &rows));
            if let Some(quotas) = answer["tenant"]["quotas"].as_array() {
                for quota in quotas {
                    out.push_str(&format!(
                        "\nquota {} {}: {} (consumed {})\n",
                        cell(&quota["metric"]),
                        cell(&quota["period"]),
                        cell(&quota["quota"]),
                        cell(&quota["consumed"])
                    ));
                    let rows: Vec<Vec<String>> = quota["rights"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .map(|item| vec![cell(&item["node"]), cell(&item["rights"])])
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push_str(&table(&["node", "rights"], &rows));
                }
            }
            out
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config)?;
    // The fault harness's clock skew (a test build's feature; see `crate::faults`).
    #[cfg(feature = "fault-injection")]
    if let Ok(offset) = std::env::var("TESSERA_FAULT_CLOCK_OFFSET_MS") {
        let offset_ms: i64 = offset
            .parse()
            .context("parsing TESSERA_FAULT_CLOCK_OFFSET_MS")?;
        crate::faults::set_clock_offset_ms(offset_ms);
        tracing::warn!(offset_ms, "injected clock offset");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-io")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal().context("installing the SIGTERM and SIGINT handlers")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let state = server::build_state(config)
            .await
            .context("starting the node")?;
        if let Some(path) = &state.control.new_operator_token_file {
            // Named, not printed: logs are read and shipped by others.
            tracing::warn!(
                file = %path.display(),
                "no operator token configured: generated one and wrote it to this file \
                 (mode 0600; only its digest is stored). Read it, then delete the file"
            );
        }
        tracing::info!(
            node = %state.control.id(),
            peer_id = state.control.peer_id(),
            replayed_records = state.control.replayed,
            "replica ready"
        );
        server::run(listener, state, shutdown).await?;
        Ok(())
    })
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = match std::env::var("TESSERA_LOG") {
        Ok(directive) => EnvFilter::try_new(directive).context("parsing TESSERA_LOG")?,
        Err(_) => EnvFilter::try_new(&config.log.level).context("parsing log.level")?,
    };
    // Colour only for a human at a terminal; log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that completes on
/// the first of them. Installed before the node binds, so a signal that arrives before the
/// serve loop first polls is a clean shutdown, never the signal's default death. (Unix
/// only, like the rest of this binary.)
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown signal received");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_stay_inside_their_segment_or_value() {
        assert_eq!(segment("6875064201593600"), "6875064201593600");
        assert_eq!(segment("../x"), "..%2Fx");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment("a b?c#d/é"), "a%20b%3Fc%23d%2F%C3%A9");
        assert_eq!(segment("thumb_v2-x.y~z"), "thumb_v2-x.y~z");
        assert_eq!(query_value("a&b=c d#e"), "a%26b%3Dc+d%23e");
        assert_eq!(query_value("2026-11"), "2026-11");
    }

    /// Every command and every argument says what it is in `--help` (an empty line there
    /// was the first thing an operator met).
    #[test]
    fn every_command_and_argument_says_what_it_is() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(here.clone());
                }
                for arg in sub.get_arguments() {
                    if arg.get_help().is_none() {
                        missing.push(format!("{here} <{}>", arg.get_id()));
                    }
                }
                check(sub, &here, missing);
            }
        }
        let mut command = Cli::command();
        command.build();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        check(&command, "tessera", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
