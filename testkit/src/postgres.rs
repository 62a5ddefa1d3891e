//! A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` on a temporary directory and
//! a free port. [`server`] is started once per test process and shared (each test takes a
//! fresh database of its own); a test that restarts or stops PostgreSQL starts its own with
//! [`PgServer::start`], so it cannot disturb the others.
//!
//! The binaries are found with `pg_config --bindir`, then under `/usr/lib/postgresql/*/bin`.
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (the
//! Debian package creates it). A watchdog stops the server and removes its directory when the
//! test process ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running test server.
#[derive(Debug)]
pub struct PgServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory.
    pub dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
/// Counts databases across every server of this process, so names never repeat.
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The test process's server, started on first use. Panics with the reason if PostgreSQL
/// cannot be started (its binaries missing, say): a test that needs it cannot pass without.
pub fn server() -> &'static PgServer {
    match SERVER.get_or_init(|| start(None)) {
        Ok(server) => server,
        Err(why) => panic!("cannot start a test PostgreSQL: {why}"),
    }
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no PostgreSQL found: install it (apt-get install -y postgresql)".to_owned())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| "no pg_ctl under /usr/lib/postgresql/*/bin".to_owned())
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// A command for `tool`, run as the server's user.
fn tool(bin: &Path, run_as: Option<&str>, tool: &str) -> Command {
    match run_as {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(bin.join(tool));
            command
        }
        None => Command::new(bin.join(tool)),
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl PgServer {
    /// Starts a server of this process's own, stopped and removed when it is dropped (or, at
    /// the latest, when the process ends). Blocks for the second or two `initdb` takes.
    pub fn start() -> Result<PgServer, String> {
        start(None)
    }

    /// The same, serving TLS (as well as plain connections) with this PEM certificate chain
    /// and key.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<PgServer, String> {
        start(Some((cert_pem, key_pem)))
    }
}

fn start(tls: Option<(&str, &str)>) -> Result<PgServer, String> {
    let bin = bin_dir()?;
    let root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let run_as = root.then(|| "postgres".to_owned());
    let dir = std::env::temp_dir().join(format!("wharf-test-pg-{}-{}", std::process::id(), free_port()?));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if let Some(user) = &run_as {
        run(
            {
                let mut c = Command::new("chown");
                c.arg(format!("{user}:")).arg(&dir);
                c
            },
            "chown of the test database directory",
        )?;
    }
    let data = dir.join("data");
    let mut initdb = tool(&bin, run_as.as_deref(), "initdb");
    initdb.args(["-U", "wharf", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"]).arg(&data);
    run(initdb, "initdb")?;
    let port = free_port()?;
    let mut options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300",
        dir.display()
    );
    if let Some((cert, key)) = tls {
        use std::os::unix::fs::PermissionsExt as _;
        let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert_path, cert).map_err(|e| e.to_string())?;
        std::fs::write(&key_path, key).map_err(|e| e.to_string())?;
        // PostgreSQL refuses a key that others can read, or that its user does not own.
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
        if let Some(user) = &run_as {
            let mut chown = Command::new("chown");
            chown.arg(format!("{user}:")).arg(&cert_path).arg(&key_path);
            run(chown, "chown of the test certificate")?;
        }
        options.push_str(&format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert_path.display(),
            key_path.display()
        ));
    }
    let mut pg_ctl = tool(&bin, run_as.as_deref(), "pg_ctl");
    pg_ctl.args(["-w", "-t", "60", "-o", &options, "-l"]).arg(dir.join("log")).arg("-D").arg(&data).arg("start");
    run(pg_ctl, "pg_ctl start")?;
    // The watchdog: when this process is gone, stop the server and remove its files.
    let stop = match &run_as {
        Some(user) => format!("runuser -u {user} -- {}/pg_ctl", bin.display()),
        None => format!("{}/pg_ctl", bin.display()),
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        data = data.display(),
        dir = dir.display(),
    );
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the watchdog: {e}"))?;
    Ok(PgServer { port, dir, bin, run_as })
}

impl PgServer {
    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://wharf@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("wharf_test_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::Relaxed));
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        self.url(&name)
    }

    /// Restarts the server as after a crash (`pg_ctl restart -m immediate`): every connection
    /// is cut; what was committed survives.
    pub fn restart_immediate(&self) -> Result<(), String> {
        let mut pg_ctl = tool(&self.bin, self.run_as.as_deref(), "pg_ctl");
        // With its log file named: the new server would otherwise hold this command's output
        // open, and the wait for it would never end.
        pg_ctl.args(["-w", "-t", "60", "-m", "immediate", "-l"]).arg(self.dir.join("log"));
        pg_ctl.arg("-D").arg(self.dir.join("data")).arg("restart");
        run(pg_ctl, "pg_ctl restart")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut pg_ctl = tool(&self.bin, self.run_as.as_deref(), "pg_ctl");
        pg_ctl.args(["-m", "immediate", "-D"]).arg(self.dir.join("data")).arg("stop");
        let _ = run(pg_ctl, "pg_ctl stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
