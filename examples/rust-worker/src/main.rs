//! A wharf worker with typed Rust handlers: the lab job of `examples/lab-results` in Rust.
//!
//! Run with: `cargo run -p example-rust-worker` (server at `WHARF_SERVER`, default
//! `http://127.0.0.1:7070`), then `wharf enqueue labs process_pending_labs --payload
//! '{"lab_id": "L-1", "panel": "glucose", "values": [95, 150]}'`. Stop it with Ctrl-C: running
//! jobs finish (or are released after 30 s) before it exits.

use serde::{Deserialize, Serialize};
use wharf::logging::{self, LogFormat};
use wharf::worker::{HandlerError, Handlers, JobContext, Shutdown, Worker, WorkerConfig};

/// The payload of a lab job.
#[derive(Debug, Deserialize)]
struct Lab {
    lab_id: String,
    panel: String,
    values: Vec<f64>,
}

/// What a lab job produces.
#[derive(Debug, Serialize)]
struct Summary {
    lab_id: String,
    values: usize,
    flagged: usize,
}

async fn process(job: JobContext, lab: Lab) -> Result<Summary, HandlerError> {
    let (low, high) = match lab.panel.as_str() {
        "glucose" => (70.0, 140.0),
        "potassium" => (3.0, 5.0),
        other => return Err(HandlerError::permanent(format!("unknown panel {other:?}"))),
    };
    job.progress(&serde_json::json!({"stage": "checking", "panel": lab.panel}));
    let flagged = lab.values.iter().filter(|v| **v < low || **v >= high).count();
    Ok(Summary { lab_id: lab.lab_id, values: lab.values.len(), flagged })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The worker's lines (started, connected, one per job) on standard error.
    logging::init(LogFormat::Pretty);
    let server = std::env::var("WHARF_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let handlers = Handlers::new().on("process_pending_labs", process).on("process_stat_lab", process);
    let mut config = WorkerConfig::new(&server, vec!["labs".into()]);
    config.concurrency = 4;
    Worker::new(config, handlers)?.run(Shutdown::on_signals()).await?;
    Ok(())
}
