//! Vacuum that keeps up with the churn of the jobs table.
//!
//! Every lease leaves a dead entry at the front of its queue's range of `jobs_ready`, exactly
//! where the next lease starts its walk, and only VACUUM removes it. Autovacuum visits a table
//! once per `autovacuum_naptime` (a minute by default): at thousands of leases a second, the
//! front of the index then holds hundreds of thousands of dead entries and each lease wades
//! through them (measured: 13 ms a lease instead of 2, right after a million jobs ran). So the
//! leader checks every [`INTERVAL`] what autovacuum checks every minute, with the thresholds
//! the migrations gave the tables, and runs the vacuum itself, on a connection of its own.
//!
//! Caveats: VACUUM needs the tables' owner (the role that ran the migrations); for another
//! role PostgreSQL skips it with a warning, and autovacuum alone keeps up, later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::connect::{Connector, describe};
use super::sql;

/// How often the leader looks at the dead rows of its tables.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Dead rows a table may hold before it is vacuumed: a base plus a share of its live rows, as
/// the migrations set for autovacuum on `wharf.jobs`.
fn due(dead: i64, live: i64) -> bool {
    dead >= 1_000 + live / 50
}

/// The leader's vacuum: at most one running at a time.
#[derive(Debug)]
pub(super) struct Vacuum {
    checked: Mutex<Option<Instant>>,
    running: Arc<AtomicBool>,
}

impl Vacuum {
    pub(super) fn new() -> Vacuum {
        Vacuum { checked: Mutex::new(None), running: Arc::new(AtomicBool::new(false)) }
    }

    /// Starts a vacuum of each table that needs one, unless one still runs or this was
    /// checked less than [`INTERVAL`] ago. Returns at once; the vacuum runs on.
    pub(super) async fn check(&self, client: &tokio_postgres::Client, connector: &Connector) {
        {
            let mut checked = self.checked.lock().await;
            if checked.is_some_and(|at| at.elapsed() < INTERVAL) || self.running.load(Ordering::Acquire) {
                return;
            }
            *checked = Some(Instant::now());
        }
        let rows = match client.query(sql::TABLES_DEAD_ROWS, &[]).await {
            Ok(rows) => rows,
            Err(err) => return tracing::debug!(error = %describe(&err), "cannot read table statistics"),
        };
        let tables: Vec<String> = rows
            .iter()
            .filter(|row| due(row.get(1), row.get(2)))
            .map(|row| format!("wharf.{}", row.get::<_, String>(0)))
            .collect();
        if tables.is_empty() || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (connector, running) = (connector.clone(), Arc::clone(&self.running));
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = async {
                let (client, connection) = connector.connect().await?;
                tokio::spawn(connection);
                client.batch_execute(&format!("VACUUM {}", tables.join(", "))).await
            }
            .await;
            match outcome {
                Ok(()) => {
                    tracing::debug!(tables = %tables.join(", "), ms = started.elapsed().as_millis() as u64, "vacuumed")
                }
                Err(err) => tracing::warn!(error = %describe(&err), "vacuum failed; autovacuum remains"),
            }
            running.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_table_is_due_past_a_base_and_a_share_of_its_live_rows() {
        assert!(!due(999, 0));
        assert!(due(1_000, 0));
        assert!(!due(20_999, 1_000_000));
        assert!(due(21_000, 1_000_000));
    }
}
