//! Copies bytes both ways between two streams, with half-close, an idle timeout and a
//! maximum lifetime: zero-copy between plain TCP sockets, buffered otherwise.

use super::deadlines::{Deadlines, Expired};
use super::splice;
use super::stream::TunnelStream;
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use futures_util::future::Either;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
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
    /// Each kind's label, by [`Self::kind`].
    const LABELS: [&'static str; 5] = [
        "completed",
        "idle_timeout",
        "max_lifetime",
        "shutdown",
        "error",
    ];

    /// How many kinds of reason there are (see [`Self::kind`]).
    pub const KINDS: usize = Self::LABELS.len();

    /// The reason's kind, below [`Self::KINDS`]: one per label.
    pub fn kind(&self) -> usize {
        match self {
            CloseReason::Completed => 0,
            CloseReason::IdleTimeout => 1,
            CloseReason::MaxLifetime => 2,
            CloseReason::Shutdown => 3,
            CloseReason::Error(_) => 4,
        }
    }

    /// A short, stable label for metrics and audit records.
    pub fn as_label(&self) -> &'static str {
        Self::LABELS[self.kind()]
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Error(e) => write!(f, "error: {e}"),
            other => f.write_str(other.as_label()),
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
/// completes. A plain TCP client is forwarded with `splice(2)` (zero-copy); anything
/// else with a buffered copy. Returns the outcome and whether it was zero-copy.
pub fn pump_tcp<S: Future<Output = ()>>(
    client: TunnelStream,
    target: TcpStream,
    limits: PumpLimits,
    shutdown: S,
) -> impl Future<Output = (PumpOutcome, bool)> {
    match client {
        TunnelStream::Plain(client) => {
            let (prefix, client) = client.into_parts();
            let meter = Meter::new();
            Either::Left(SplicePump {
                client,
                target,
                prefix,
                up: Some(splice::Forward::default()),
                down: Some(splice::Forward::default()),
                deadlines: Deadlines::new(meter.started, limits.idle, limits.max_lifetime),
                meter,
                shutdown,
            })
        }
        // Boxed: the buffered copy's state is larger than the spliced one, and every
        // spliced tunnel would be as large.
        client => {
            let buffered = crate::boxed::pinned_in_place(|| pump(client, target, limits, shutdown));
            Either::Right(buffered.map(|outcome| (outcome, false)))
        }
    }
}

pin_project_lite::pin_project! {
    /// A tunnel between two plain TCP sockets, spliced, watched by its deadlines and by
    /// the shutdown: one future that owns its sockets and the state of each direction.
    /// An idle tunnel holds this for its whole life, and `async` code would hold more:
    /// the arguments beside the futures they were moved into, and a future per
    /// direction. Dropped as soon as it is ready: closing the sockets sends the end of
    /// stream of the way that ended last, which is not shut down first.
    struct SplicePump<S> {
        client: TcpStream,
        target: TcpStream,
        // The client's bytes read before the tunnel began, still to send to the target.
        prefix: Bytes,
        // Each way until it is done.
        up: Option<splice::Forward>,
        down: Option<splice::Forward>,
        meter: Meter,
        #[pin]
        deadlines: Deadlines,
        #[pin]
        shutdown: S,
    }
}

impl<S: Future<Output = ()>> SplicePump<S> {
    /// Moves what is ready each way; ready when both ways are done, or with the first
    /// error.
    fn poll_copy(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let meter = &*this.meter;
        while !this.prefix.is_empty() {
            ready!(this.target.poll_write_ready(cx))?;
            match this.target.try_write(this.prefix) {
                Ok(n) => {
                    this.prefix.advance(n);
                    meter.moved(&meter.up, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let last = this.down.is_none();
        if let Some(up) = this.up
            && let Poll::Ready(done) = up.poll_forward(cx, this.client, this.target, last, |n| {
                meter.moved(&meter.up, n)
            })
        {
            done?;
            *this.up = None;
        }
        let last = this.up.is_none();
        if let Some(down) = this.down
            && let Poll::Ready(done) = down.poll_forward(cx, this.target, this.client, last, |n| {
                meter.moved(&meter.down, n)
            })
        {
            done?;
            *this.down = None;
        }
        if this.up.is_none() && this.down.is_none() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl<S: Future<Output = ()>> Future for SplicePump<S> {
    type Output = (PumpOutcome, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let copying = self.as_mut().poll_copy(cx);
        let this = self.project();
        watch(copying, this.shutdown, this.deadlines, this.meter, cx)
            .map(|reason| (this.meter.outcome(reason), true))
    }
}

/// Pumps `client` <-> `target` with a buffered copy until both sides are done, a limit
/// passes or `shutdown` completes.
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
    let meter = Meter::new();
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut target_read, mut target_write) = tokio::io::split(target);
    let copying = async {
        tokio::try_join!(
            copy(&mut client_read, &mut target_write, &meter, &meter.up),
            copy(&mut target_read, &mut client_write, &meter, &meter.down),
        )
        .map(drop)
    };
    let reason = supervise(copying, &meter, limits, shutdown).await;
    meter.outcome(reason)
}

/// Byte counts each way and the time of the last byte either way.
struct Meter {
    started: Instant,
    /// Milliseconds from `started` to the last byte.
    last_activity: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Meter {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_activity: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    /// Counts `n` bytes in `direction` (`up` or `down`) and notes the activity.
    fn moved(&self, direction: &AtomicU64, n: usize) {
        direction.fetch_add(n as u64, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(now, Ordering::Relaxed);
    }

    fn outcome(&self, reason: CloseReason) -> PumpOutcome {
        PumpOutcome {
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
            reason,
        }
    }
}

/// Runs `copying` until it ends, the idle timeout or the lifetime passes, or `shutdown`
/// completes.
fn supervise<'m, C, S>(
    copying: C,
    meter: &'m Meter,
    limits: PumpLimits,
    shutdown: S,
) -> Supervised<'m, C, S> {
    Supervised {
        copying,
        shutdown,
        deadlines: Deadlines::new(meter.started, limits.idle, limits.max_lifetime),
        meter,
    }
}

pin_project_lite::pin_project! {
    /// A pump's copying, watched by its deadlines and by the shutdown. A future of its
    /// own rather than a `select!`: an idle tunnel holds this state for its whole life,
    /// and the `select!` held the copying and the shutdown twice.
    struct Supervised<'m, C, S> {
        #[pin]
        copying: C,
        #[pin]
        shutdown: S,
        #[pin]
        deadlines: Deadlines,
        meter: &'m Meter,
    }
}

impl<C, S> Future for Supervised<'_, C, S>
where
    C: Future<Output = std::io::Result<()>>,
    S: Future<Output = ()>,
{
    type Output = CloseReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let this = self.project();
        let copying = this.copying.poll(cx);
        watch(copying, this.shutdown, this.deadlines, this.meter, cx)
    }
}

/// Why a pump ends now, if it does: its copying ended (`copying` is ready), `shutdown`
/// completed, or a deadline passed. One decision for the spliced and the buffered pump.
fn watch<S: Future<Output = ()>>(
    copying: Poll<std::io::Result<()>>,
    shutdown: Pin<&mut S>,
    deadlines: Pin<&mut Deadlines>,
    meter: &Meter,
    cx: &mut Context<'_>,
) -> Poll<CloseReason> {
    if let Poll::Ready(result) = copying {
        return Poll::Ready(match result {
            Ok(()) => CloseReason::Completed,
            Err(e) => CloseReason::Error(e.to_string()),
        });
    }
    if shutdown.poll(cx).is_ready() {
        return Poll::Ready(CloseReason::Shutdown);
    }
    let last_traffic =
        || meter.started + Duration::from_millis(meter.last_activity.load(Ordering::Relaxed));
    deadlines
        .poll_expired(cx, last_traffic)
        .map(|expired| match expired {
            Expired::Idle => CloseReason::IdleTimeout,
            Expired::Lifetime => CloseReason::MaxLifetime,
        })
}

/// Copies one direction; at end of input, shuts the writer down (half-close).
async fn copy<R, W>(
    reader: &mut R,
    writer: &mut W,
    meter: &Meter,
    direction: &AtomicU64,
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
        // Streams that buffer (TLS, HTTP/2 and HTTP/3 streams) send what they hold, so
        // that a request and its answer never wait on each other.
        writer.flush().await?;
        meter.moved(direction, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::stream::PrefixedStream;
    use bytes::Bytes;
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

    /// Two connected loopback sockets: (ours, the peer's).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (accepted.unwrap().0, connected.unwrap())
    }

    /// A spliced pump from `client` to `target` (5 s idle timeout, no shutdown), running.
    fn spawn_spliced(
        client: TcpStream,
        target: TcpStream,
    ) -> tokio::task::JoinHandle<(PumpOutcome, bool)> {
        let client = TunnelStream::Plain(PrefixedStream::new(Bytes::new(), client));
        tokio::spawn(pump_tcp(
            client,
            target,
            limits(5_000),
            std::future::pending(),
        ))
    }

    #[tokio::test]
    async fn plain_sockets_are_spliced_with_read_ahead_and_half_close() {
        let (client, mut client_peer) = socket_pair().await;
        let (target, mut target_peer) = socket_pair().await;
        let client =
            TunnelStream::Plain(PrefixedStream::new(Bytes::from_static(b"early:"), client));
        let pumping = tokio::spawn(pump_tcp(
            client,
            target,
            limits(5_000),
            std::future::pending(),
        ));
        // More than a pipe holds, both ways at once, so every chunk loop runs.
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let up = payload.clone();
        let sending = tokio::spawn(async move {
            client_peer.write_all(&up).await.unwrap();
            client_peer.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_peer.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        target_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..6], b"early:");
        assert!(got[6..] == payload[..], "payload corrupted");
        // The client half-closed; the target can still answer.
        target_peer.write_all(&payload[..100_000]).await.unwrap();
        target_peer.shutdown().await.unwrap();
        let back = sending.await.unwrap();
        assert!(back == payload[..100_000]);
        let (outcome, zero_copy) = pumping.await.unwrap();
        assert!(zero_copy);
        assert_eq!(
            outcome,
            PumpOutcome {
                bytes_up: 6 + 3_000_000,
                bytes_down: 100_000,
                reason: CloseReason::Completed
            }
        );
    }

    /// A splice that leaves its pipe short of full has drained the socket, and the next
    /// one waits for readiness instead of trying first: a burst of tiny segments queued
    /// before the tunnel starts, and bytes that then trickle in one at a time each way,
    /// all arrive, and the tunnel still ends when both sides have.
    #[tokio::test]
    async fn spliced_tunnels_forward_bursts_of_tiny_segments_and_trickles() {
        let (client, mut client_peer) = socket_pair().await;
        let (target, mut target_peer) = socket_pair().await;
        client_peer.set_nodelay(true).unwrap();
        target_peer.set_nodelay(true).unwrap();
        for byte in 0..200u8 {
            client_peer.write_all(&[byte]).await.unwrap();
        }
        let pumping = spawn_spliced(client, target);
        let exchange = async {
            let mut burst = [0u8; 200];
            target_peer.read_exact(&mut burst).await.unwrap();
            assert!(burst.iter().copied().eq(0..200u8));
            let mut one = [0u8];
            for byte in 0..100u8 {
                client_peer.write_all(&[byte]).await.unwrap();
                target_peer.read_exact(&mut one).await.unwrap();
                assert_eq!(one[0], byte);
                target_peer.write_all(&[byte]).await.unwrap();
                client_peer.read_exact(&mut one).await.unwrap();
                assert_eq!(one[0], byte);
            }
            client_peer.shutdown().await.unwrap();
            assert_eq!(target_peer.read(&mut one).await.unwrap(), 0);
            target_peer.shutdown().await.unwrap();
            assert_eq!(client_peer.read(&mut one).await.unwrap(), 0);
            pumping.await.unwrap()
        };
        let (outcome, _) = tokio::time::timeout(Duration::from_secs(20), exchange)
            .await
            .expect("a byte or an end of stream was not forwarded");
        assert_eq!(
            outcome,
            PumpOutcome {
                bytes_up: 300,
                bytes_down: 100,
                reason: CloseReason::Completed
            }
        );
    }

    #[tokio::test]
    async fn spliced_tunnels_close_when_idle_and_report_resets() {
        let (client, _client_peer) = socket_pair().await;
        let (target, _target_peer) = socket_pair().await;
        let client = TunnelStream::Plain(PrefixedStream::new(Bytes::new(), client));
        let (outcome, _) = pump_tcp(client, target, limits(200), std::future::pending()).await;
        assert_eq!(outcome.reason, CloseReason::IdleTimeout);

        let (client, client_peer) = socket_pair().await;
        let (target, mut target_peer) = socket_pair().await;
        let pumping = spawn_spliced(client, target);
        socket2::SockRef::from(&client_peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client_peer);
        // Keep the other direction busy so the reset is noticed while writing.
        for _ in 0..100 {
            if target_peer.write_all(&[0u8; 65_536]).await.is_err() {
                break;
            }
        }
        let (outcome, _) = pumping.await.unwrap();
        assert!(
            matches!(outcome.reason, CloseReason::Error(_)),
            "{:?}",
            outcome.reason
        );
    }

    #[test]
    fn every_close_reason_has_a_kind_of_its_own() {
        let reasons = [
            CloseReason::Completed,
            CloseReason::IdleTimeout,
            CloseReason::MaxLifetime,
            CloseReason::Shutdown,
            CloseReason::Error("reset".into()),
        ];
        let mut kinds: Vec<usize> = reasons.iter().map(CloseReason::kind).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds, (0..CloseReason::KINDS).collect::<Vec<_>>());
    }

    /// Every idle tunnel holds its pump's state, and the row "memory per idle tunnel"
    /// in `benches/` compares it with HAProxy's. The spliced pump is 464 bytes now (with
    /// the drain's `force_closing` future); as `async` code it was 1,256.
    #[tokio::test]
    async fn a_spliced_tunnel_holds_little_state() {
        let (client, _client_peer) = socket_pair().await;
        let (target, _target_peer) = socket_pair().await;
        let client = TunnelStream::Plain(PrefixedStream::new(Bytes::new(), client));
        let drain = crate::drain::Drain::new();
        let pumping = pump_tcp(client, target, limits(5_000), drain.force_closing());
        let size = std::mem::size_of_val(&pumping);
        assert!(size <= 512, "the spliced pump's state is {size} bytes");
    }

    #[tokio::test]
    async fn other_streams_use_the_buffered_copy() {
        let (client, mut client_peer) = duplex(64);
        let (target, mut target_peer) = socket_pair().await;
        let pumping = tokio::spawn(pump_tcp(
            TunnelStream::Boxed(Box::new(client)),
            target,
            limits(5_000),
            std::future::pending(),
        ));
        client_peer.write_all(b"hi").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        target_peer.read_to_end(&mut got).await.unwrap();
        drop(target_peer);
        let (outcome, zero_copy) = pumping.await.unwrap();
        assert!(!zero_copy);
        assert_eq!((outcome.bytes_up, got.as_slice()), (2, &b"hi"[..]));
    }
}
