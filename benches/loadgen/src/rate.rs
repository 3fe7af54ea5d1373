//! New tunnels per second: open, echo one byte, close.

use crate::{Route, proxy_connect};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `concurrency` loops of open / one byte / close for `seconds`.
pub async fn run(route: &Route, concurrency: usize, seconds: u64) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut loops = Vec::new();
    for _ in 0..concurrency {
        let route = route.clone();
        loops.push(tokio::spawn(async move {
            let (mut done, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                match one_tunnel(&route).await {
                    Ok(()) => done += 1,
                    Err(_) => failed += 1,
                }
            }
            (done, failed)
        }));
    }
    let started = Instant::now();
    let (mut done, mut failed) = (0, 0);
    for one in loops {
        let (d, f) = one.await?;
        done += d;
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "tunnels": done,
        "failed": failed,
        "seconds": elapsed,
        "tunnels_per_s": done as f64 / elapsed,
    })
    .to_string())
}

async fn one_tunnel(route: &crate::Route) -> anyhow::Result<()> {
    let mut stream = proxy_connect::open(route).await?;
    stream.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    Ok(())
}
