//! The node under test: the `tessera` command itself ([`tessera_edge::cli::run`]), built
//! in this package so the multi-process suites and benches can start it by path.

fn main() -> anyhow::Result<()> {
    tessera_edge::cli::run()
}
