//! HTTPS requests per second: `connections` TLS connections along a route (through a
//! proxy's CONNECT tunnel), each sending HTTP/1.1 GETs one after another (keep-alive).
//! Through an intercepting proxy the TLS ends at the proxy, which re-originates it.

use crate::Route;
use crate::proxy_connect;
use anyhow::{Context, bail};
use boring::ssl::{SslConnector, SslMethod};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one run asks for.
pub struct Load<'a> {
    /// The server name (SNI, certificate name and `Host`).
    pub host: &'a str,
    /// The path of every GET.
    pub path: &'a str,
    /// The CAs the server's certificate must chain to.
    pub ca: &'a Path,
    /// Connections at once.
    pub connections: usize,
    /// Seconds measured, after a one-second warm-up.
    pub seconds: u64,
}

/// Runs the load and returns its JSON result.
pub async fn run(route: &Route, load: &Load<'_>) -> anyhow::Result<String> {
    let mut tls = SslConnector::builder(SslMethod::tls())?;
    tls.set_ca_file(load.ca)
        .with_context(|| format!("loading {}", load.ca.display()))?;
    tls.set_alpn_protos(b"\x08http/1.1")?;
    let tls = Arc::new(tls.build());
    let counting = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", load.path, load.host);
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let (tls, route, host) = (tls.clone(), route.clone(), load.host.to_string());
        let (counting, done, requests) = (counting.clone(), done.clone(), requests.clone());
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let stream = proxy_connect::open(&route).await?;
            let config = tls.configure()?;
            let mut stream = tokio_boring::connect(config, &host, stream)
                .await
                .map_err(|e| anyhow::anyhow!("TLS with {host}: {e}"))?;
            let mut buf = Vec::with_capacity(8192);
            while !done.load(Ordering::Relaxed) {
                stream.write_all(request.as_bytes()).await?;
                read_response(&mut stream, &mut buf).await?;
                if counting.load(Ordering::Relaxed) {
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(load.seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.context("a connection task failed")??;
    }
    let counted = requests.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "connections": load.connections,
        "requests": counted,
        "seconds": elapsed,
        "requests_per_s": counted as f64 / elapsed,
    })
    .to_string())
}

/// Reads one response with a `Content-Length` body; anything but 200 is an error.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> anyhow::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 16 * 1024 {
            bail!("response head too long");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the connection closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.split(' ').nth(1) != Some("200") {
        bail!("not a 200: {}", head.lines().next().unwrap_or_default());
    }
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no content-length")?;
    let mut body = buf.len() - head_end;
    while body < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the connection closed inside a body");
        }
        body += n;
    }
    Ok(())
}
