//! Bulk download throughput through parallel tunnels.

use crate::{Route, proxy_connect};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Reads from `tunnels` tunnels for a warm-up second plus `seconds`, counting the bytes
/// read after the warm-up.
pub async fn run(route: &Route, tunnels: usize, seconds: u64) -> anyhow::Result<String> {
    let counted = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..tunnels {
        let mut stream = proxy_connect::open(route).await?;
        let (counted, measuring) = (counted.clone(), measuring.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) if measuring.load(Ordering::Relaxed) => {
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let bytes = counted.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for reader in &readers {
        reader.abort();
    }
    let gbits = bytes as f64 * 8.0 / elapsed / 1e9;
    Ok(serde_json::json!({ "bytes": bytes, "seconds": elapsed, "gbit_per_s": gbits }).to_string())
}
