//! `wharf scale`: try a pool's scaling parameters.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::core::scaling::ScalePolicy;
use crate::core::time::parse_duration;
use crate::outln;
use crate::scaler::simulate::{Model, Outcome, Rule, Trace, oracle, simulate};

/// `wharf scale`.
#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// Replay an arrival trace through a pool's scaling, beside an oracle that knows the
    /// future and AWS-style target tracking, in virtual time.
    Simulate(SimulateArgs),
}

/// `wharf scale simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The trace: one line per arrival, `SECOND COUNT RUNS_FOR` (seconds); `#` starts a comment.
    #[arg(long)]
    pub trace: PathBuf,
    /// Fewest workers.
    #[arg(long, default_value_t = 0)]
    pub min: u32,
    /// Most workers.
    #[arg(long, default_value_t = 10)]
    pub max: u32,
    /// Jobs of backlog (ready and running) per worker.
    #[arg(long, default_value_t = 5)]
    pub target: u32,
    /// Scale in only after needing fewer workers for this long, and this long after a scale-out.
    #[arg(long, default_value = "60s")]
    pub scale_out_cooldown: String,
    /// At most one scale-in per this long; zero only after an empty backlog for this long.
    #[arg(long, default_value = "300s")]
    pub scale_in_cooldown: String,
    /// From a worker's start until it takes jobs.
    #[arg(long, default_value = "30s")]
    pub startup: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One rule's outcome, as printed.
#[derive(Debug, Serialize)]
struct Row {
    rule: &'static str,
    #[serde(flatten)]
    outcome: Outcome,
    /// Worker-seconds over the oracle's.
    of_oracle: f64,
}

/// Runs `wharf scale`.
pub fn run(command: ScaleCommand) -> anyhow::Result<()> {
    match command {
        ScaleCommand::Simulate(args) => simulate_command(args),
    }
}

fn simulate_command(args: SimulateArgs) -> anyhow::Result<()> {
    let duration = |flag: &str, text: &str| -> anyhow::Result<Duration> {
        parse_duration(text).map_err(|e| anyhow!("{flag}: {e}"))
    };
    let policy = ScalePolicy::new(
        args.min,
        args.max,
        args.target,
        duration("--scale-out-cooldown", &args.scale_out_cooldown)?,
        duration("--scale-in-cooldown", &args.scale_in_cooldown)?,
    )?;
    let model = Model { policy, startup: duration("--startup", &args.startup)? };
    let text = read_bounded(&args.trace)?;
    let trace = Trace::parse(&text).with_context(|| format!("{}", args.trace.display()))?;
    let best = oracle(&trace, &model);
    let ratio =
        |o: &Outcome| if best.worker_seconds == 0 { 1.0 } else { o.worker_seconds as f64 / best.worker_seconds as f64 };
    let rows: Vec<Row> = [
        ("wharf", simulate(&trace, &model, Rule::Wharf)),
        ("target tracking", simulate(&trace, &model, Rule::TargetTracking)),
        ("oracle", best),
    ]
    .into_iter()
    .map(|(rule, outcome)| Row { rule, outcome, of_oracle: ratio(&outcome) })
    .collect();
    if args.json {
        return super::output::json(&rows);
    }
    let mut t = super::output::table(&[
        "RULE",
        "JOBS",
        "WORKER-S",
        "× ORACLE",
        "PEAK BACKLOG",
        "P99 WAIT",
        "DRAIN",
        "SCALE-OUT DELAY",
        "BUSY STOPPED",
    ]);
    for r in &rows {
        let o = &r.outcome;
        t.add_row(vec![
            r.rule.to_owned(),
            o.jobs.to_string(),
            o.worker_seconds.to_string(),
            format!("{:.2}", r.of_oracle),
            o.peak_backlog.to_string(),
            format!("{} s", o.p99_wait),
            format!("{} s", o.drain),
            format!("{} s", o.scale_out_delay),
            o.busy_stopped.to_string(),
        ]);
    }
    outln!("{t}")?;
    Ok(())
}

/// A trace file, refused past 64 MiB (two million arrival lines are far less).
fn read_bounded(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    const LIMIT: u64 = 64 << 20;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    file.take(LIMIT + 1).read_to_string(&mut text).with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() as u64 > LIMIT {
        return Err(anyhow!("{} is larger than {} MiB", path.display(), LIMIT >> 20));
    }
    Ok(text)
}
