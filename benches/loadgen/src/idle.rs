//! Memory per idle tunnel: resident memory of the proxy before and after opening many
//! tunnels that carried one byte and then stay idle.

use crate::{Route, proxy_connect};
use anyhow::Context;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Opens `count` tunnels (64 at a time), waits for the proxy to settle, and reports the
/// growth of the resident memory of `pids` per tunnel.
pub async fn run(route: &Route, count: usize, pids: &[u32]) -> anyhow::Result<String> {
    let before = resident_kib(pids)?;
    let mut open = Vec::with_capacity(count);
    let mut failed = 0usize;
    for batch in 0..count.div_ceil(64) {
        let size = 64.min(count - batch * 64);
        let mut opening = Vec::with_capacity(size);
        for _ in 0..size {
            let route = route.clone();
            opening.push(tokio::spawn(async move {
                let mut stream = proxy_connect::open(&route).await?;
                stream.write_all(b"x").await?;
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await?;
                anyhow::Ok(stream)
            }));
        }
        for one in opening {
            match one.await? {
                Ok(stream) => open.push(stream),
                Err(_) => failed += 1,
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib(pids)?;
    let per_tunnel = after.saturating_sub(before) as f64 / open.len().max(1) as f64;
    drop(open);
    Ok(serde_json::json!({
        "tunnels": count - failed,
        "failed": failed,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_tunnel": per_tunnel,
    })
    .to_string())
}

/// The summed `VmRSS` of `pids`, in KiB.
fn resident_kib(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let rss = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no VmRSS for process {pid}"))?;
        total += rss;
    }
    Ok(total)
}
