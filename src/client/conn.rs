//! One keep-alive HTTP/1.1 connection, for callers that send many small requests in a row
//! (the bench's load loops).
//!
//! [`Client`](super::Client) pools connections and handles redirects, timeouts and TLS; this is
//! the bare minimum — one connection, one request at a time, bodies as bytes — so a load
//! generator spends its CPU on load, not on itself. It speaks plain `http://` only.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ClientError;
use crate::api::Problem;

/// A single connection to a server.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    base: String,
}

impl Connection {
    /// Connects to the server at `base` (`http://host:port`).
    pub async fn open(base: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        let fail = |cause: String| ClientError::Connect { url: base.clone(), cause };
        let host = base.strip_prefix("http://").ok_or_else(|| fail("only http:// URLs are supported here".into()))?;
        let host = host.split('/').next().unwrap_or(host).to_owned();
        let stream = tokio::net::TcpStream::connect(&host).await.map_err(|e| fail(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = conn.await;
        });
        Ok(Connection { sender, host, base })
    }

    /// POSTs `body` (JSON bytes) to `path`; returns the status and the body.
    pub async fn post_bytes(&mut self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes), ClientError> {
        let request = Request::post(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol { url: self.base.clone(), cause: e.to_string() })?;
        self.sender.ready().await.map_err(|e| ClientError::Connect { url: self.base.clone(), cause: e.to_string() })?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Connect { url: self.base.clone(), cause: e.to_string() })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Connect { url: self.base.clone(), cause: e.to_string() })?
            .to_bytes();
        Ok((status, body))
    }

    /// POSTs `body` as JSON to `path` and decodes a successful answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&mut self, path: &str, body: &B) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ClientError::Protocol { url: self.base.clone(), cause: e.to_string() })?;
        let (status, answer) = self.post_bytes(path, Bytes::from(bytes)).await?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Problem>(&answer) {
                Ok(problem) => ClientError::Api { status: status.as_u16(), problem: Box::new(problem) },
                Err(_) => ClientError::Protocol { url: self.base.clone(), cause: format!("HTTP {status}") },
            });
        }
        serde_json::from_slice(&answer)
            .map_err(|e| ClientError::Protocol { url: self.base.clone(), cause: e.to_string() })
    }
}
