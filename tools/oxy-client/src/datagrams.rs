//! CONNECT-UDP flows as channels of datagrams, whatever carries them, and the two ways
//! of using them: stdin lines out and replies printed, or a generated echo load.

use crate::{Carrier, UdpArgs, capsules, quic};
use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// One flow: datagrams to the target, and replies from it.
pub struct Flow {
    /// The proxy's status for the request (200, 101, or the refusal).
    pub status: u16,
    /// Datagrams towards the target.
    pub tx: mpsc::Sender<Bytes>,
    /// Datagrams from the target.
    pub rx: mpsc::Receiver<Bytes>,
}

pub async fn run(args: UdpArgs) -> anyhow::Result<()> {
    if args.count.is_some() && args.size < 8 {
        anyhow::bail!("--size must be at least 8");
    }
    let path = crate::expand(&args.template, &args.target)?;
    let flows = match args.count {
        Some(_) => args.flows.max(1),
        None => 1,
    };
    let mut session = None;
    let mut ip_sessions = Vec::new();
    let opened = match args.over {
        Carrier::H3 | Carrier::H2 | Carrier::H1 if args.ip => {
            let target: std::net::SocketAddr = args
                .target
                .parse()
                .context("--ip needs an address target: 192.0.2.1:53 or [2001:db8::1]:53")?;
            let mut opened = Vec::new();
            for i in 0..flows {
                let port = 40_000 + u16::try_from(i % 20_000).unwrap_or(0);
                let (flow, quic) =
                    crate::ip::udp_flow(&args.proxy, args.over, target, port).await?;
                ip_sessions.extend(quic);
                opened.push(flow);
            }
            opened
        }
        Carrier::H3 => {
            let (opened, quic) = quic::udp_flows(&args.proxy, &path, flows).await?;
            session = Some(quic);
            opened
        }
        Carrier::H2 | Carrier::H1 => {
            let mut opened = Vec::new();
            for _ in 0..flows {
                opened
                    .push(capsules::udp_flow(&args.proxy, &path, args.over == Carrier::H2).await?);
            }
            opened
        }
        Carrier::Direct => {
            let mut opened = Vec::new();
            for _ in 0..flows {
                opened.push(direct_flow(&args.target).await?);
            }
            opened
        }
    };
    let result = exchange(&args, opened, flows).await;
    for session in session.into_iter().chain(ip_sessions) {
        session.close().await;
    }
    result
}

/// Stdin lines through the first flow, or the echo load through all of them.
async fn exchange(args: &UdpArgs, opened: Vec<Flow>, flows: usize) -> anyhow::Result<()> {
    let Some(count) = args.count else {
        let Some(flow) = opened.into_iter().next() else {
            anyhow::bail!("no flow");
        };
        return match args.listen {
            Some(local) => relay(flow, local).await,
            None => interactive(flow).await,
        };
    };
    let status = opened.first().map_or(0, |f| f.status);
    if !(200..300).contains(&status) && status != 101 {
        println!(
            "{}",
            serde_json::json!({ "status": status, "sent": 0, "received": 0 })
        );
        return Ok(());
    }
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(args.timeout);
    let runs = opened
        .into_iter()
        .map(|flow| tokio::spawn(echo_load(flow, count, args.size, args.window, timeout)));
    let (mut sent, mut received) = (0, 0);
    for run in runs {
        let (s, r) = run.await.context("a flow failed")?;
        sent += s;
        received += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "status": status,
            "flows": flows,
            "sent": sent,
            "received": received,
            "elapsed_s": elapsed,
            "datagrams_per_s": received as f64 / elapsed,
            "bytes_per_s": (received * args.size as u64) as f64 / elapsed,
        })
    );
    Ok(())
}

/// Relays between a local UDP socket bound at `local` and the flow: what local clients
/// send goes to the target, replies go to the client that sent last.
async fn relay(mut flow: Flow, local: std::net::SocketAddr) -> anyhow::Result<()> {
    if !(200..300).contains(&flow.status) && flow.status != 101 {
        anyhow::bail!("the proxy refused the flow ({})", flow.status);
    }
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .with_context(|| format!("cannot bind {local}"))?;
    println!("listening on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 65_535];
    let mut client = None;
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (n, from) = received?;
                client = Some(from);
                if flow.tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return Ok(());
                }
            }
            reply = flow.rx.recv() => {
                let Some(reply) = reply else { return Ok(()) };
                if let Some(to) = client {
                    socket.send_to(&reply, to).await?;
                }
            }
        }
    }
}

/// Each stdin line is one datagram; each reply is printed as a line.
async fn interactive(mut flow: Flow) -> anyhow::Result<()> {
    eprintln!("status {}", flow.status);
    if !(200..300).contains(&flow.status) && flow.status != 101 {
        anyhow::bail!("the proxy refused the flow ({})", flow.status);
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        // Once stdin ends, replies still in flight get two seconds.
        let wait = if stdin_open {
            Duration::MAX
        } else {
            Duration::from_secs(2)
        };
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line? {
                Some(line) => {
                    if flow.tx.send(Bytes::from(line)).await.is_err() {
                        return Ok(());
                    }
                }
                None => stdin_open = false,
            },
            reply = tokio::time::timeout(wait, flow.rx.recv()) => match reply {
                Ok(Some(reply)) => println!("{}", String::from_utf8_lossy(&reply)),
                _ => return Ok(()),
            },
        }
    }
}

/// Sends `count` numbered datagrams with at most `window` unanswered, and counts the
/// distinct echoes that come back; those not back within `timeout` count as lost.
async fn echo_load(
    mut flow: Flow,
    count: u64,
    size: usize,
    window: u64,
    timeout: Duration,
) -> (u64, u64) {
    let mut seen = HashSet::new();
    let (mut next, mut lost) = (0u64, 0u64);
    let mut buf = BytesMut::new();
    loop {
        let outstanding = |next: u64, seen: &HashSet<u64>, lost: u64| {
            next.saturating_sub(seen.len() as u64 + lost)
        };
        while next < count && outstanding(next, &seen, lost) < window.max(1) {
            buf.put_u64(next);
            buf.resize(size, 0xab);
            if flow.tx.send(buf.split().freeze()).await.is_err() {
                return (next, seen.len() as u64);
            }
            next += 1;
        }
        if next == count && outstanding(next, &seen, lost) == 0 {
            break;
        }
        match tokio::time::timeout(timeout, flow.rx.recv()).await {
            Ok(Some(reply)) => {
                if let Some(seq) = reply.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                    let seq = u64::from_be_bytes(seq);
                    if seq < next {
                        seen.insert(seq);
                    }
                }
            }
            Ok(None) => break,
            Err(_) => lost += outstanding(next, &seen, lost),
        }
    }
    (next, seen.len() as u64)
}

/// Plain UDP to the target: the baseline without a proxy.
async fn direct_flow(target: &str) -> anyhow::Result<Flow> {
    // Any local address: a target routed into a TUN device is not reachable from loopback.
    let any = if target.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket
        .connect(target)
        .await
        .context("cannot reach the target")?;
    let socket = std::sync::Arc::new(socket);
    let (tx, mut to_target) = mpsc::channel::<Bytes>(256);
    let (from_target, rx) = mpsc::channel(256);
    let sender = socket.clone();
    tokio::spawn(async move {
        while let Some(datagram) = to_target.recv().await {
            let _ = sender.send(&datagram).await;
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok(n) = socket.recv(&mut buf).await {
            if from_target
                .send(Bytes::copy_from_slice(&buf[..n]))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Ok(Flow {
        status: 200,
        tx,
        rx,
    })
}
