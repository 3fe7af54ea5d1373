//! Copies bytes both ways between two streams, with half-close, an idle timeout and a
//! maximum lifetime.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Bytes in flight per direction.
const BUFFER: usize = 16 * 1024;

/// Why a tunnel closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides finished sending.
    Completed,
    /// No byte either way for the idle timeout.
    IdleTimeout,
    /// The maximum lifetime passed.
    MaxLifetime,
    /// Oxy was shutting down.
    Shutdown,
    /// A side failed (reset, broken pipe, ...).
    Error(String),
}

impl CloseReason {
    /// A short, stable label for metrics and audit records.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::Completed => "completed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error(_) => "error",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Error(e) => write!(f, "error: {e}"),
            other => f.write_str(other.label()),
        }
    }
}

/// Bytes each way once a pump has ended, and why it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpOutcome {
    /// Bytes from the client to the target.
    pub bytes_up: u64,
    /// Bytes from the target to the client.
    pub bytes_down: u64,
    /// Why it ended.
    pub reason: CloseReason,
}

/// Timeouts of one pump.
#[derive(Debug, Clone, Copy)]
pub struct PumpLimits {
    /// Close after this long without a byte either way.
    pub idle: Duration,
    /// Close after this long in any case (`None`: no limit).
    pub max_lifetime: Option<Duration>,
}

/// Pumps `client` <-> `target` until both sides are done, a limit passes or `shutdown`
/// completes.
pub async fn pump<C, T>(
    client: C,
    target: T,
    limits: PumpLimits,
    shutdown: impl Future<Output = ()>,
) -> PumpOutcome
where
    C: AsyncRead + AsyncWrite,
    T: AsyncRead + AsyncWrite,
{
    let started = Instant::now();
    let last_activity = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut target_read, mut target_write) = tokio::io::split(target);
    let copy_both = async {
        tokio::try_join!(
            copy(
                &mut client_read,
                &mut target_write,
                &up,
                &last_activity,
                started
            ),
            copy(
                &mut target_read,
                &mut client_write,
                &down,
                &last_activity,
                started
            ),
        )
    };
    let idle = async {
        loop {
            let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
            let due = started + last + limits.idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    let lifetime = async {
        match limits.max_lifetime {
            Some(max) => tokio::time::sleep(max).await,
            None => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        result = copy_both => match result {
            Ok(_) => CloseReason::Completed,
            Err(e) => CloseReason::Error(e.to_string()),
        },
        _ = idle => CloseReason::IdleTimeout,
        _ = lifetime => CloseReason::MaxLifetime,
        _ = shutdown => CloseReason::Shutdown,
    };
    PumpOutcome {
        bytes_up: up.load(Ordering::Relaxed),
        bytes_down: down.load(Ordering::Relaxed),
        reason,
    }
}

/// Copies one direction; at end of input, shuts the writer down (half-close).
async fn copy<R, W>(
    reader: &mut R,
    writer: &mut W,
    bytes: &AtomicU64,
    last_activity: &AtomicU64,
    started: Instant,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return writer.shutdown().await;
        }
        writer.write_all(&buf[..n]).await?;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_activity.store(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn limits(idle_ms: u64) -> PumpLimits {
        PumpLimits {
            idle: Duration::from_millis(idle_ms),
            max_lifetime: Some(Duration::from_secs(60)),
        }
    }

    #[tokio::test]
    async fn copies_both_ways_and_half_closes() {
        let (client, mut client_peer) = duplex(64);
        let (target, mut target_peer) = duplex(64);
        let pumping = tokio::spawn(pump(client, target, limits(5_000), std::future::pending()));
        client_peer.write_all(b"hello").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        target_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // The other direction still flows after the client's half-close.
        target_peer.write_all(b"world!").await.unwrap();
        target_peer.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!");
        let outcome = pumping.await.unwrap();
        assert_eq!(
            outcome,
            PumpOutcome {
                bytes_up: 5,
                bytes_down: 6,
                reason: CloseReason::Completed
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnels_close_and_activity_keeps_them_open() {
        let (client, mut client_peer) = duplex(64);
        let (target, _target_peer) = duplex(64);
        let started = Instant::now();
        let pumping = tokio::spawn(pump(client, target, limits(1_000), std::future::pending()));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            client_peer.write_all(b"x").await.unwrap();
        }
        let outcome = pumping.await.unwrap();
        assert_eq!(outcome.reason, CloseReason::IdleTimeout);
        assert_eq!(outcome.bytes_up, 3);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(2_800) && took < Duration::from_millis(2_900),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_lifetime_and_shutdown_end_a_busy_tunnel() {
        let (client, _c) = duplex(64);
        let (target, _t) = duplex(64);
        let outcome = pump(
            client,
            target,
            PumpLimits {
                idle: Duration::from_secs(60),
                max_lifetime: Some(Duration::from_secs(2)),
            },
            std::future::pending(),
        )
        .await;
        assert_eq!(outcome.reason, CloseReason::MaxLifetime);
        let (client, _c) = duplex(64);
        let (target, _t) = duplex(64);
        let outcome = pump(
            client,
            target,
            limits(60_000),
            tokio::time::sleep(Duration::from_secs(1)),
        )
        .await;
        assert_eq!(outcome.reason, CloseReason::Shutdown);
    }
}
