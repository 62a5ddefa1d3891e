//! The checkpointer: copies committed pages from the write-ahead log into the database file, on
//! its own thread and connection, so the writer never stalls for it.
//!
//! SQLite would otherwise checkpoint inside whichever commit crosses its threshold, holding that
//! commit (and every answer waiting on it) for tens of milliseconds. Here the writer has
//! automatic checkpoints off; this thread runs a `PASSIVE` checkpoint, which never blocks the
//! writer, once [`BATCH_COMMITS`] commits have accumulated or a second has passed since the last
//! one — not more often, because each checkpoint ends with an fsync of the database file that
//! competes with the writer's own fsyncs and would lengthen commits at low load. Once every
//! frame is copied, the writer's next transaction starts the log over from its beginning.
//! Should the log still grow past [`WAL_LIMIT_FRAMES`] (a write load the checkpointer cannot
//! keep up with), the writer runs a blocking checkpoint itself rather than let the file grow
//! without bound.
//!
//! [`reserve_log`] gives the log that full length in zeros when the store opens, where the
//! filesystem has room to spare (a nearly full disk keeps its space for data). A commit's
//! fsync on a file that grew must also write the file's new size and block map — on ext4 a
//! second synchronous write per commit, which doubled the time a commit took — while an fsync
//! of blocks the file already has writes the data alone. SQLite tells a frame of the current
//! log by its checksum and salt, so zeros, like frames of a log it started over, are ignored at
//! recovery; and `journal_size_limit` is set above the reserved length, so SQLite never cuts
//! the file back below it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// How often the checkpointer looks at the commit count.
pub(super) const INTERVAL: Duration = Duration::from_millis(50);
/// Commits that trigger a checkpoint at once.
pub(super) const BATCH_COMMITS: u64 = 256;
/// Longest time between checkpoints while commits happen.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(1);
/// Log size, in 4 KiB frames (about 64 MiB), beyond which the writer checkpoints itself.
pub(super) const WAL_LIMIT_FRAMES: i64 = 16_384;

/// Bytes reserved for the log: a header and [`WAL_LIMIT_FRAMES`] frames of `page_size` bytes
/// and a 24-byte header each, the most the log holds before the writer checkpoints it.
pub(super) fn log_reserve_bytes(page_size: u64) -> u64 {
    32 + WAL_LIMIT_FRAMES as u64 * (page_size + 24)
}

/// Free space a filesystem must have, in reservations, for the log to be given one: the room
/// is a speed-up, never worth crowding out the data it is there to make faster.
const FREE_SPACE_FACTOR: u64 = 4;

/// Extends the log beside `db` with zeros to `bytes`, and syncs it, unless it is that long
/// already or the filesystem has less than [`FREE_SPACE_FACTOR`] times that free. Only bytes
/// past the file's end are written, so frames of the log are never touched; on a failed write
/// the file is cut back to where it ended. Returns whether the log has its room.
pub(super) fn reserve_log(db: &Path, bytes: u64) -> std::io::Result<bool> {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let mut log =
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(format!("{}-wal", db.display()))?;
    let end = log.seek(SeekFrom::End(0))?;
    if end >= bytes {
        return Ok(true);
    }
    let fs = nix::sys::statvfs::fstatvfs(&log).map_err(std::io::Error::from)?;
    #[allow(clippy::useless_conversion)] // narrower than u64 on some targets
    let free = u64::from(fs.blocks_available()).saturating_mul(u64::from(fs.fragment_size()));
    if free < bytes.saturating_mul(FREE_SPACE_FACTOR) {
        return Ok(false);
    }
    let zeros = vec![0u8; 1 << 20];
    let mut len = end;
    let written = (|| {
        while len < bytes {
            let n = (bytes - len).min(zeros.len() as u64) as usize;
            log.write_all(&zeros[..n])?;
            len += n as u64;
        }
        log.sync_all()
    })();
    match written {
        Ok(()) => Ok(true),
        Err(err) => {
            let _ = log.set_len(end);
            Err(err)
        }
    }
}

/// The running checkpointer.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    /// Frames in the log at the last checkpoint.
    wal_frames: Arc<AtomicI64>,
    /// Commits so far, counted by the writer.
    commits: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second connection to `path` and starts checkpointing.
    pub(super) fn start(path: &Path, synchronous: &str) -> rusqlite::Result<Self> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let stop = Arc::new(AtomicBool::new(false));
        let wal_frames = Arc::new(AtomicI64::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, wal_frames, commits) = (Arc::clone(&stop), Arc::clone(&wal_frames), Arc::clone(&commits));
            std::thread::Builder::new()
                .name("wharf-checkpoint".into())
                .spawn(move || {
                    let mut done = 0;
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        let now = commits.load(Ordering::Acquire);
                        let pending = now - done;
                        if pending >= BATCH_COMMITS || (pending > 0 && last.elapsed() >= MAX_DELAY) {
                            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1)) {
                                Ok(frames) => wal_frames.store(frames, Ordering::Release),
                                Err(err) => tracing::warn!(error = %err, "checkpoint failed; will retry"),
                            }
                            done = now;
                            last = Instant::now();
                        }
                        std::thread::park_timeout(INTERVAL);
                    }
                })
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
        };
        Ok(Checkpointer { stop, wal_frames, commits, thread: Some(thread) })
    }

    /// Counts one commit by the writer.
    pub(super) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Release);
    }

    /// True when the log has outgrown what the checkpointer keeps up with.
    pub(super) fn behind(&self) -> bool {
        self.wal_frames.load(Ordering::Acquire) > WAL_LIMIT_FRAMES
    }

    /// Records that the writer just checkpointed the whole log itself.
    pub(super) fn caught_up(&self) {
        self.wal_frames.store(0, Ordering::Release);
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}
