//! How a node reaches PostgreSQL: the parsed URL and its TLS. Every connection of the store
//! (the pool, the event listener, the notifier, the leader's, the clock's) opens through one
//! [`Connector`].
//!
//! TLS is on when the URL says `sslmode=require`; the server's certificate is then verified
//! (name and chain) against the system's roots and the CA file given. With `prefer` (the
//! default) or `disable`, connections are plain: a `prefer` that encrypted without verifying
//! would protect against nothing, and would refuse the self-signed certificates many servers
//! ship with.

use std::path::Path;

use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgOpenError;

/// An error with its causes, on one line: the driver's errors say what failed ("error
/// performing TLS handshake") and keep why (the certificate's issuer is unknown) as a source.
pub fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// A connection's driving half, to spawn or to poll for notifications.
pub type PgConnection = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// Opens connections to one database.
#[derive(Clone)]
pub struct Connector {
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: show where, not how.
        f.debug_struct("Connector").field("hosts", &self.pg.get_hosts()).field("tls", &self.tls_required()).finish()
    }
}

impl Connector {
    /// Parses `url`; `ca_file` adds certificates to trust for `sslmode=require`.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, PgOpenError> {
        let mut pg: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| PgOpenError::Url(e.to_string()))?;
        if pg.get_ssl_mode() != SslMode::Require {
            pg.ssl_mode(SslMode::Disable);
        }
        let tls = crate::tls::client_config(ca_file).map_err(|e| PgOpenError::Tls(e.to_string()))?;
        Ok(Connector { pg, tls: MakeRustlsConnect::new(tls) })
    }

    /// True when connections are encrypted and the server verified.
    pub fn tls_required(&self) -> bool {
        self.pg.get_ssl_mode() == SslMode::Require
    }

    /// Opens one connection.
    pub async fn connect(&self) -> Result<(Client, PgConnection), tokio_postgres::Error> {
        self.pg.connect(self.tls.clone()).await
    }

    /// The pool's connection manager.
    pub(super) fn manager(&self) -> deadpool_postgres::Manager {
        let config = deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast };
        deadpool_postgres::Manager::from_config(self.pg.clone(), self.tls.clone(), config)
    }
}
