//! Opens a connection along a [`Route`]: straight to `--to`, or through an HTTP proxy
//! with `CONNECT`.

use crate::Route;
use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection to the target along `route`, ready for the target's bytes.
pub async fn open(route: &Route) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(route.to)
        .await
        .with_context(|| format!("connecting to {}", route.to))?;
    stream.set_nodelay(true)?;
    let Some(target) = &route.connect else {
        return Ok(stream);
    };
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The target speaks only after the client (echo) or streams bytes that are counted
    // after a warm-up (source), so tunnel bytes read along with the head are dropped.
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            bail!("CONNECT response head too long");
        }
        let n = stream
            .read(&mut chunk)
            .await
            .context("reading the CONNECT response")?;
        if n == 0 {
            bail!("the proxy closed the connection before answering CONNECT");
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let status_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    if status_line.split(' ').nth(1) != Some("200") {
        bail!("CONNECT {target} refused: {status_line}");
    }
    Ok(stream)
}
