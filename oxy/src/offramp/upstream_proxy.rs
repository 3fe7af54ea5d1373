//! Chaining through an upstream HTTP proxy: CONNECT to the target over a connection to
//! the proxy, then use that connection as if it reached the target.

use crate::hooks::{Target, UpstreamProxy};
use base64::Engine;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head accepted from the proxy.
const MAX_HEAD: usize = 16 * 1024;

/// Why the upstream proxy did not open the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamProxyError {
    /// Talking to the proxy failed.
    #[error("upstream proxy {proxy}: {source}")]
    Io {
        /// The proxy.
        proxy: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The proxy answered something other than 2xx, or garbage.
    #[error("upstream proxy {proxy} refused CONNECT {target}: {answer}")]
    Refused {
        /// The proxy.
        proxy: String,
        /// The target asked for.
        target: String,
        /// Its status line, or what was wrong with the answer.
        answer: String,
    },
}

/// Asks the proxy on `stream` to tunnel to `target`; on `2xx` the stream is the tunnel.
pub async fn connect_via(
    mut stream: TcpStream,
    proxy: &UpstreamProxy,
    target: &Target,
    timeout: Duration,
) -> Result<TcpStream, UpstreamProxyError> {
    let name = proxy.address.to_string();
    let io = |source| UpstreamProxyError::Io {
        proxy: name.clone(),
        source,
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, password)) = &proxy.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str(&crate::telemetry::distributed_tracing::header_lines());
    request.push_str("\r\n");
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        // Byte by byte, so that no byte of the tunnel is read past the response head.
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < MAX_HEAD {
            if stream.read(&mut byte).await? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(io)?;
    let refused = |answer: String| UpstreamProxyError::Refused {
        proxy: name.clone(),
        target: target.to_string(),
        answer,
    };
    if !head.ends_with(b"\r\n\r\n") {
        return Err(refused("no complete response head".into()));
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status.len() == 3 && status.starts_with('2') && status_line.starts_with("HTTP/1.") {
        Ok(stream)
    } else {
        Err(refused(status_line))
    }
}
