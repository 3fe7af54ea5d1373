//! Happy eyeballs v2 (RFC 8305): race AAAA and A lookups, then connection attempts over
//! the interleaved addresses; the first connection wins and the others are dropped.

use crate::settings::HappyEyeballsSettings;
use futures_util::StreamExt;
use futures_util::future::OptionFuture;
use futures_util::stream::FuturesUnordered;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use tokio::time::{Instant, sleep_until};

/// A lookup of one address family, already filtered by the caller's policy.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Vec<IpAddr>> + Send + 'a>>;

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum HappyEyeballsError {
    /// Neither lookup produced an address to try.
    #[error("no address to connect to")]
    NoAddress,
    /// Every attempt failed; the last error is kept.
    #[error("connecting to {addr} failed: {source}")]
    AllFailed {
        /// The last address tried.
        addr: SocketAddr,
        /// Its error.
        source: io::Error,
    },
    /// `connect_timeout` passed first.
    #[error("connecting timed out")]
    TimedOut,
}

/// Addresses waiting for an attempt, served alternately by family, IPv6 first.
#[derive(Default)]
struct Queue {
    v6: VecDeque<SocketAddr>,
    v4: VecDeque<SocketAddr>,
    last_was_v6: bool,
}

impl Queue {
    fn extend(&mut self, addrs: Vec<IpAddr>, port: u16) {
        for ip in addrs {
            let addr = SocketAddr::new(ip, port);
            if ip.is_ipv6() {
                self.v6.push_back(addr);
            } else {
                self.v4.push_back(addr);
            }
        }
    }

    fn pop(&mut self) -> Option<SocketAddr> {
        let v6_turn = !self.last_was_v6 || self.v4.is_empty();
        let next = if v6_turn {
            self.v6.pop_front().or_else(|| self.v4.pop_front())
        } else {
            self.v4.pop_front().or_else(|| self.v6.pop_front())
        };
        if let Some(addr) = next {
            self.last_was_v6 = addr.is_ipv6();
        }
        next
    }

    fn is_empty(&self) -> bool {
        self.v6.is_empty() && self.v4.is_empty()
    }
}

/// Connects to `port` on the addresses the two lookups produce, as RFC 8305 describes.
pub async fn connect<'a, S, C, F>(
    settings: &HappyEyeballsSettings,
    port: u16,
    lookup_v6: Lookup<'a>,
    lookup_v4: Lookup<'a>,
    connect: C,
) -> Result<(S, SocketAddr), HappyEyeballsError>
where
    C: Fn(SocketAddr) -> F,
    F: Future<Output = io::Result<S>>,
{
    let deadline = Instant::now() + settings.connect_timeout;
    tokio::time::timeout_at(
        deadline,
        race(settings, port, lookup_v6, lookup_v4, connect),
    )
    .await
    .unwrap_or(Err(HappyEyeballsError::TimedOut))
}

async fn race<'a, S, C, F>(
    settings: &HappyEyeballsSettings,
    port: u16,
    lookup_v6: Lookup<'a>,
    lookup_v4: Lookup<'a>,
    connect: C,
) -> Result<(S, SocketAddr), HappyEyeballsError>
where
    C: Fn(SocketAddr) -> F,
    F: Future<Output = io::Result<S>>,
{
    let mut queue = Queue::default();
    let mut v6 = Some(lookup_v6);
    let mut v4 = Some(lookup_v4);

    // Resolution: go as soon as AAAA answers; if A answers first, give AAAA a moment.
    // Biased, AAAA first: when both have answered (a numeric target's do at once), the
    // resolution delay is not started, and its timer not armed.
    tokio::select! {
        biased;
        Some(addrs) = OptionFuture::from(v6.as_mut()) => {
            v6 = None;
            queue.extend(addrs, port);
        }
        Some(addrs) = OptionFuture::from(v4.as_mut()) => {
            v4 = None;
            queue.extend(addrs, port);
            let wait_until = Instant::now() + settings.resolution_delay;
            tokio::select! {
                biased;
                Some(addrs) = OptionFuture::from(v6.as_mut()) => {
                    v6 = None;
                    queue.extend(addrs, port);
                }
                _ = sleep_until(wait_until) => {}
            }
        }
    }

    let mut attempts = FuturesUnordered::new();
    let mut next_attempt_at = Instant::now();
    let mut last_error = None;
    loop {
        if attempts.is_empty() && queue.is_empty() && v6.is_none() && v4.is_none() {
            return Err(match last_error {
                Some((addr, source)) => HappyEyeballsError::AllFailed { addr, source },
                None => HappyEyeballsError::NoAddress,
            });
        }
        let may_start =
            !queue.is_empty() && (attempts.is_empty() || Instant::now() >= next_attempt_at);
        if may_start {
            if let Some(addr) = queue.pop() {
                let attempt = connect(addr);
                attempts.push(async move { (addr, attempt.await) });
                next_attempt_at = Instant::now() + settings.connection_attempt_delay;
            }
            continue;
        }
        tokio::select! {
            Some((addr, result)) = attempts.next(), if !attempts.is_empty() => match result {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connection attempt failed");
                    last_error = Some((addr, e));
                    // A failure starts the next attempt at once.
                    next_attempt_at = Instant::now();
                }
            },
            _ = sleep_until(next_attempt_at), if !queue.is_empty() => {}
            Some(addrs) = OptionFuture::from(v6.as_mut()), if v6.is_some() => {
                v6 = None;
                queue.extend(addrs, port);
            }
            Some(addrs) = OptionFuture::from(v4.as_mut()), if v4.is_some() => {
                v4 = None;
                queue.extend(addrs, port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn settings() -> HappyEyeballsSettings {
        HappyEyeballsSettings {
            resolution_delay: Duration::from_millis(50),
            connection_attempt_delay: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn answer(after_ms: u64, addrs: &[&str]) -> Lookup<'static> {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            addrs
        })
    }

    /// How each address behaves: after how long, success or refusal; absent = hangs.
    fn connector(
        plan: &[(&str, u64, bool)],
    ) -> impl Fn(SocketAddr) -> Pin<Box<dyn Future<Output = io::Result<Instant>> + Send>> {
        let plan: HashMap<IpAddr, (u64, bool)> = plan
            .iter()
            .map(|(ip, ms, ok)| (ip.parse().unwrap(), (*ms, *ok)))
            .collect();
        move |addr| {
            let behaviour = plan.get(&addr.ip()).copied();
            Box::pin(async move {
                match behaviour {
                    Some((ms, ok)) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        if ok {
                            Ok(Instant::now())
                        } else {
                            Err(io::Error::from(io::ErrorKind::ConnectionRefused))
                        }
                    }
                    None => std::future::pending().await,
                }
            })
        }
    }

    async fn run(
        v6: Lookup<'static>,
        v4: Lookup<'static>,
        plan: &[(&str, u64, bool)],
    ) -> (Result<SocketAddr, String>, Duration) {
        let start = Instant::now();
        let result = connect(&settings(), 443, v6, v4, connector(plan)).await;
        (
            result.map(|(_, addr)| addr).map_err(|e| e.to_string()),
            start.elapsed(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_wins_when_it_works() {
        let (won, took) = run(
            answer(10, &["2001:db8::1"]),
            answer(5, &["192.0.2.1"]),
            &[("2001:db8::1", 20, true), ("192.0.2.1", 1, true)],
        )
        .await;
        assert_eq!(won.unwrap().ip().to_string(), "2001:db8::1");
        // A came at 5 ms, AAAA at 10 ms (within the 50 ms resolution delay), connect 20 ms.
        assert_eq!(took, Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_ipv6_path_falls_back_to_ipv4_after_the_attempt_delay() {
        let (won, took) = run(
            answer(0, &["2001:db8::1"]),
            answer(0, &["192.0.2.1"]),
            &[("192.0.2.1", 10, true)],
        )
        .await;
        assert_eq!(won.unwrap().ip().to_string(), "192.0.2.1");
        assert_eq!(took, Duration::from_millis(260));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_attempt_starts_the_next_at_once() {
        let (won, took) = run(
            answer(0, &["2001:db8::1", "2001:db8::2"]),
            answer(0, &["192.0.2.1"]),
            &[("2001:db8::1", 5, false), ("192.0.2.1", 5, true)],
        )
        .await;
        // Interleaved order: ::1, then 192.0.2.1 (not ::2).
        assert_eq!(won.unwrap().ip().to_string(), "192.0.2.1");
        assert_eq!(took, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_aaaa_answer_is_not_waited_for_past_the_resolution_delay() {
        let (won, took) = run(
            answer(400, &["2001:db8::1"]),
            answer(0, &["192.0.2.1"]),
            &[("2001:db8::1", 1, true), ("192.0.2.1", 10, true)],
        )
        .await;
        assert_eq!(won.unwrap().ip().to_string(), "192.0.2.1");
        assert_eq!(took, Duration::from_millis(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_joins_the_race() {
        // IPv4 hangs from 50 ms; the AAAA answer arrives at 100 ms and joins the queue, so
        // its attempt starts with the next attempt slot (300 ms) and wins.
        let (won, took) = run(
            answer(100, &["2001:db8::1"]),
            answer(0, &["192.0.2.1"]),
            &[("2001:db8::1", 5, true)],
        )
        .await;
        assert_eq!(won.unwrap().ip().to_string(), "2001:db8::1");
        assert_eq!(took, Duration::from_millis(305));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_and_empty_answers_are_errors() {
        let (err, _) = run(answer(0, &[]), answer(0, &[]), &[]).await;
        assert_eq!(err.unwrap_err(), "no address to connect to");
        let (err, _) = run(
            answer(0, &["2001:db8::1"]),
            answer(0, &["192.0.2.1"]),
            &[("2001:db8::1", 1, false), ("192.0.2.1", 1, false)],
        )
        .await;
        assert!(
            err.unwrap_err()
                .starts_with("connecting to 192.0.2.1:443 failed")
        );
        let (err, took) = run(answer(0, &["192.0.2.1"]), answer(0, &[]), &[]).await;
        assert_eq!(err.unwrap_err(), "connecting timed out");
        assert_eq!(took, Duration::from_secs(10));
    }
}
