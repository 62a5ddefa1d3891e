//! The database's clock, on every node.
//!
//! Lease expiry, backoff and promotion compare times written by different nodes, so they must
//! share one clock. Asking the database for the time on every operation would cost a round
//! trip; instead each node measures its offset from the database's clock (half a round trip
//! of uncertainty) every half minute and corrects its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::connect::{Connector, describe};

use super::sql;
use crate::core::Clock;
use crate::core::time::{SystemClock, Timestamp};

/// This node's clock, corrected to the database's.
#[derive(Debug, Default)]
pub struct DbClock {
    offset_ms: AtomicI64,
}

impl Clock for DbClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(SystemClock.now().as_millis() + self.offset_ms.load(Ordering::Relaxed))
    }
}

impl DbClock {
    /// Measures the offset now (failing if the database cannot be reached), then every 30 s.
    pub async fn start(pg: &Connector) -> Result<Arc<Self>, String> {
        let clock = Arc::new(DbClock::default());
        clock.measure(pg).await?;
        let (weak, pg) = (Arc::downgrade(&clock), pg.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let Some(clock) = weak.upgrade() else { return };
                if let Err(err) = clock.measure(&pg).await {
                    tracing::debug!(error = %err, "cannot read the database's clock; keeping the last offset");
                }
            }
        });
        Ok(clock)
    }

    async fn measure(&self, pg: &Connector) -> Result<(), String> {
        let (client, connection) = pg.connect().await.map_err(|e| describe(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let before = SystemClock.now().as_millis();
        let db: i64 = client.query_one(sql::DB_NOW, &[]).await.map_err(|e| describe(&e))?.get(0);
        let after = SystemClock.now().as_millis();
        let offset = db - (before + after) / 2;
        if self.offset_ms.swap(offset, Ordering::Relaxed).abs_diff(offset) > 1_000 {
            tracing::warn!(offset_ms = offset, "this node's clock is far from the database's; using the database's");
        }
        Ok(())
    }
}
