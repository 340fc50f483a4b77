//! The `tessera` binary: everything it does is [`tessera_edge::cli`], so the fault
//! harness's shim binary is the same program.

fn main() -> anyhow::Result<()> {
    tessera_edge::cli::run()
}
