//! One keep-alive HTTP/1.1 connection, for callers that send many small requests in a row
//! (the bench's load loops).
//!
//! [`Client`](super::Client) pools connections and handles redirects, timeouts and TLS; this is
//! the bare minimum — one connection, one request at a time, bodies as bytes — so a load
//! generator spends its CPU on load, not on itself.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ClientError;
use crate::api::Problem;

/// An HTTP/1.1 client connection over `io`, driven by a task of its own.
async fn handshake<I>(io: I) -> hyper::Result<SendRequest<Full<Bytes>>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes the connection.
        let _ = conn.await;
    });
    Ok(sender)
}

/// A single connection to a server.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    base: String,
    authorization: Option<hyper::header::HeaderValue>,
}

impl Connection {
    /// Connects to the server at `base` (`http://host:port` or `https://…`, trusting the
    /// system's roots and `ca_file`), sending `token` as the bearer token with every request.
    pub async fn open(base: &str, token: Option<&str>, ca_file: Option<&std::path::Path>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        let fail = |cause: String| ClientError::Connect { url: base.clone(), cause };
        let (tls, rest) = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(fail("the server URL must start with http:// or https://".into())),
        };
        let host = rest.split('/').next().unwrap_or(rest).to_owned();
        let stream = tokio::net::TcpStream::connect(&host).await.map_err(|e| fail(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let sender = if tls {
            let connector = crate::tls::connector(ca_file).map_err(|e| fail(e.to_string()))?;
            let name = host.rsplit_once(':').map_or(host.as_str(), |(name, _)| name).trim_matches(['[', ']']);
            let name = rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| fail(e.to_string()))?;
            let stream = connector.connect(name, stream).await.map_err(|e| fail(e.to_string()))?;
            handshake(stream).await.map_err(|e| fail(e.to_string()))?
        } else {
            handshake(stream).await.map_err(|e| fail(e.to_string()))?
        };
        let authorization = match token {
            Some(token) => {
                let mut value = hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| fail("the token has characters a header cannot hold".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Connection { sender, host, base, authorization })
    }

    /// POSTs `body` (JSON bytes) to `path`; returns the status and the body.
    pub async fn post_bytes(&mut self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes), ClientError> {
        let request =
            Request::post(path).header(header::HOST, &self.host).header(header::CONTENT_TYPE, "application/json");
        self.send(request, body).await
    }

    /// GETs `path`; returns the status and the body.
    pub async fn get_bytes(&mut self, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
        let request = Request::get(path).header(header::HOST, &self.host);
        self.send(request, Bytes::new()).await
    }

    async fn send(
        &mut self,
        mut request: hyper::http::request::Builder,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = request
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
