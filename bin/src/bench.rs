//! The HTTP load generator behind `allsource bench` (being written).

/// Arguments of `allsource bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
///
/// # Errors
/// Always, for now.
pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
