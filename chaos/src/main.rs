//! `wharf-chaos`: runs wharf under a nemesis and checks the history.
//!
//! Run with: `cargo run --release -p wharf-chaos -- --duration 10m` (after `cargo build
//! --release`), adding `--postgres 3` for three nodes on one PostgreSQL. Exits 0 when every
//! property held, 1 with the counterexamples otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Fault injection for wharf: kill -9 and restart the server (or nodes, and PostgreSQL), kill
/// -9, pause and SIGTERM workers, under load; then check what every client saw.
#[derive(Debug, Parser)]
struct Args {
    /// How long to inject faults, e.g. 60s or 2h.
    #[arg(long, default_value = "60s")]
    duration: String,
    /// The wharf binary.
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
    /// Scratch directory (data, logs, histories); a fresh temporary one when absent.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of every random choice (printed, to replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Producers.
    #[arg(long, default_value_t = 3)]
    producers: usize,
    /// Run this many nodes on one PostgreSQL instead of one server on the embedded store. The
    /// run starts a throwaway PostgreSQL itself (its binaries must be installed) and restarts
    /// it among the faults.
    #[arg(long, value_name = "NODES")]
    postgres: Option<usize>,
    /// Also write the history and the verdict as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let duration = humantime::parse_duration(&args.duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let wharf =
        std::fs::canonicalize(&args.wharf).map_err(|e| anyhow::anyhow!("--wharf {}: {e}", args.wharf.display()))?;
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("wharf-chaos-{}", std::process::id())),
    };
    let mut config = wharf_chaos::Config::new(wharf, dir.clone(), duration);
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(nodes) = args.postgres {
        config = config.postgres(nodes);
    }
    config.workers = args.workers;
    config.producers = args.producers;
    println!("wharf-chaos: {} of faults, seed {}, in {}", args.duration, config.seed, dir.display());
    let history = wharf_chaos::run(&config).await?;
    let verdict = wharf_chaos::check(&history);
    println!("{verdict}");
    if let Some(path) = args.json {
        let doc = serde_json::json!({"seed": config.seed, "verdict": verdict, "history": history});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(verdict.valid())
}
