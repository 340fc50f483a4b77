//! The `tessera` command: `tessera serve` runs a node; `tessera config` prints the
//! effective configuration after every layer (file, environment, flags) is applied.
//!
//! `anyhow` lives here and only here: the binary reports errors to a human, the library
//! modules return typed errors.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tessera_edge::config::{Config, Overrides};
use tessera_edge::server;
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
    #[arg(long)]
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(args) => {
            let config = args.load()?;
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Serve(args) => serve(args.load()?),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-io")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let state = server::build_state(config);
        server::run(listener, state, shutdown_signal()).await?;
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

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received");
}
