//! A QUIC socket that can be shared across a restart. Its connection IDs carry a tag only
//! this process can make (`TaggedConnectionIds`), so the process reading the socket can
//! tell its own connections' packets from the rest. After a hand-over it keeps its own and
//! passes everything else (new connections, the successor's) to the successor over a
//! `SOCK_SEQPACKET` channel. A successor reads that channel instead of the socket until
//! its predecessor exits and closes it, and from then on reads the socket itself. Sending
//! always goes straight out of the shared socket.

use quinn::udp::{EcnCodepoint, RecvMeta};
use quinn::{AsyncUdpSocket, ConnectionId, ConnectionIdGenerator, UdpPoller};
use std::hash::BuildHasher;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Random bytes in each connection ID, followed by the tag.
const RANDOM_LEN: usize = 8;
/// The tag: a keyed hash of the random bytes.
const TAG_LEN: usize = 4;
/// Length of every connection ID this process issues.
const CID_LEN: usize = RANDOM_LEN + TAG_LEN;
/// A forwarded packet's header: flags, source address and port, destination address.
const HEADER_LEN: usize = 1 + 16 + 2 + 16;

/// The key that tags this process's connection IDs.
#[derive(Debug)]
pub(crate) struct CidTag(std::hash::RandomState);

impl CidTag {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(std::hash::RandomState::new()))
    }

    fn tag(&self, random: &[u8]) -> [u8; TAG_LEN] {
        let hash = self.0.hash_one(random).to_le_bytes();
        [hash[0], hash[1], hash[2], hash[3]]
    }

    /// Whether `cid` is one this process issued.
    fn issued(&self, cid: &[u8]) -> bool {
        cid.len() == CID_LEN && cid[RANDOM_LEN..] == self.tag(&cid[..RANDOM_LEN])
    }

    /// Whether `packet` belongs to one of this process's connections: its destination
    /// connection ID is one this process issued.
    fn owns(&self, packet: &[u8]) -> bool {
        let cid = match packet.first() {
            // Long header: version (4 bytes), then the length-prefixed DCID.
            Some(first) if first & 0x80 != 0 => packet
                .get(5)
                .and_then(|&len| packet.get(6..6 + usize::from(len))),
            Some(_) => packet.get(1..1 + CID_LEN),
            None => None,
        };
        cid.is_some_and(|cid| self.issued(cid))
    }
}

/// quinn's connection ID generator for a [`CidTag`].
pub(crate) struct TaggedConnectionIds(pub(crate) Arc<CidTag>);

impl ConnectionIdGenerator for TaggedConnectionIds {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut cid = [0u8; CID_LEN];
        boring::rand::rand_bytes(&mut cid[..RANDOM_LEN]).unwrap_or_else(|_| {
            // BoringSSL's generator does not fail; fall back to the hasher's randomness.
            let seed = std::hash::RandomState::new().hash_one(0u8).to_le_bytes();
            cid[..RANDOM_LEN].copy_from_slice(&seed);
        });
        let tag = self.0.tag(&cid[..RANDOM_LEN]);
        cid[RANDOM_LEN..].copy_from_slice(&tag);
        ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The shared QUIC socket of one listener.
#[derive(Debug)]
pub(crate) struct HandoverUdpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// The socket itself, for the hand-over.
    socket: OwnedFd,
    tag: Arc<CidTag>,
    /// The channel from the predecessor, while it lives.
    predecessor: Option<AsyncFd<OwnedFd>>,
    predecessor_open: AtomicBool,
    /// The channel to the successor, once there is one (until it fails).
    successor: Mutex<Option<OwnedFd>>,
}

impl HandoverUdpSocket {
    /// Wraps `socket` for quinn; `predecessor` is the channel a predecessor handed over
    /// with it, if any.
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        tag: Arc<CidTag>,
        predecessor: Option<OwnedFd>,
        runtime: &Arc<dyn quinn::Runtime>,
    ) -> io::Result<Arc<Self>> {
        let fd = socket.as_fd().try_clone_to_owned()?;
        let inner = runtime.wrap_udp_socket(socket)?;
        // SAFETY: the `AsyncFd` owns the descriptor, so it is deregistered before the
        // descriptor is closed, and nothing else refers to it.
        #[allow(unsafe_code)]
        let predecessor = predecessor
            .map(|fd| unsafe { AsyncFd::register(fd) })
            .transpose()?;
        Ok(Arc::new(Self {
            inner,
            socket: fd,
            tag,
            predecessor_open: AtomicBool::new(predecessor.is_some()),
            predecessor,
            successor: Mutex::new(None),
        }))
    }

    /// The UDP socket's descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// From now on, packets that are not this process's go to `successor`.
    pub(crate) fn forward_to(&self, successor: OwnedFd) {
        *self.successor.lock().unwrap_or_else(|p| p.into_inner()) = Some(successor);
    }

    /// Whether this process still gets its packets through a predecessor (which is then
    /// still draining).
    pub(crate) fn predecessor_alive(&self) -> bool {
        self.predecessor_open.load(Ordering::Relaxed)
    }

    /// One packet from the predecessor into `buf`; `None` once the predecessor is gone.
    fn poll_predecessor(
        &self,
        channel: &AsyncFd<OwnedFd>,
        cx: &mut Context,
        buf: &mut IoSliceMut<'_>,
        meta: &mut RecvMeta,
    ) -> Poll<io::Result<Option<()>>> {
        loop {
            let mut guard = ready!(channel.poll_read_ready(cx))?;
            let mut header = [0u8; HEADER_LEN];
            let read = guard.try_io(|fd| {
                let mut parts = [IoSliceMut::new(&mut header), IoSliceMut::new(buf)];
                rustix::io::readv(fd.get_ref(), &mut parts).map_err(io::Error::from)
            });
            match read {
                Ok(Ok(0)) => return Poll::Ready(Ok(None)),
                Ok(Ok(n)) if n > HEADER_LEN => {
                    *meta = decode_header(&header, n - HEADER_LEN);
                    return Poll::Ready(Ok(Some(())));
                }
                Ok(Ok(_)) => continue, // too short to be a packet
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Keeps this process's packets among the first `n` received and forwards the others
    /// to `successor`, segment by segment (a GRO batch may mix connections); the kept
    /// segments of each batch stay in order, so all but its last keep the stride, and the
    /// batches with any are moved to the front. Returns how many batches were kept; a
    /// successor gone (its channel closed) stops the forwarding.
    fn keep_own(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let mut successor = self.successor.lock().unwrap_or_else(|p| p.into_inner());
        if successor.is_none() {
            return n;
        }
        let mut kept = 0;
        for i in 0..n {
            let m = meta[i];
            let stride = if m.stride == 0 { m.len } else { m.stride }.max(1);
            let header = encode_header(&m);
            let mut own_len = 0;
            let mut start = 0;
            while start < m.len {
                let end = (start + stride).min(m.len);
                if self.tag.owns(&bufs[i][start..end]) {
                    bufs[i].copy_within(start..end, own_len);
                    own_len += end - start;
                } else if let Some(channel) = successor.as_ref() {
                    let parts = [
                        std::io::IoSlice::new(&header),
                        std::io::IoSlice::new(&bufs[i][start..end]),
                    ];
                    match rustix::io::writev(channel, &parts) {
                        // A full channel drops the packet, as a full socket buffer would.
                        Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "the successor's QUIC channel failed; this process keeps the packets it reads");
                            *successor = None;
                        }
                    }
                }
                start = end;
            }
            if own_len == 0 {
                continue;
            }
            if kept != i {
                let (front, back) = bufs.split_at_mut(i);
                front[kept][..own_len].copy_from_slice(&back[0][..own_len]);
            }
            meta[kept] = RecvMeta { len: own_len, ..m };
            kept += 1;
        }
        kept
    }
}

/// Batches forwarded in one `poll_recv` before it yields, so that the endpoint's own
/// connections (timers, acknowledgements) are not starved by a successor's traffic.
const FORWARD_BUDGET: usize = 32;

impl AsyncUdpSocket for HandoverUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if bufs.is_empty() || meta.is_empty() {
            return Poll::Ready(Ok(0));
        }
        for _ in 0..FORWARD_BUDGET {
            let n = match &self.predecessor {
                Some(channel) if self.predecessor_open.load(Ordering::Relaxed) => {
                    match ready!(self.poll_predecessor(channel, cx, &mut bufs[0], &mut meta[0])) {
                        Ok(Some(())) => 1,
                        Ok(None) | Err(_) => {
                            // The predecessor has exited: this process reads the socket now.
                            self.predecessor_open.store(false, Ordering::Relaxed);
                            tracing::debug!(
                                "the predecessor's QUIC channel closed; reading the socket"
                            );
                            continue;
                        }
                    }
                }
                _ => ready!(self.inner.poll_recv(cx, bufs, meta))?,
            };
            let kept = self.keep_own(bufs, meta, n);
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Flags: bit 0 a destination address follows, bits 1-2 the ECN codepoint, bit 3 the
/// source is IPv6 (an IPv4-mapped one included), bit 4 the destination is.
fn encode_header(meta: &RecvMeta) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    let ecn = meta.ecn.map_or(0, |e| e as u8);
    header[0] = u8::from(meta.dst_ip.is_some())
        | (ecn << 1)
        | (u8::from(meta.addr.is_ipv6()) << 3)
        | (u8::from(meta.dst_ip.is_some_and(|ip| ip.is_ipv6())) << 4);
    header[1..17].copy_from_slice(&v6(meta.addr.ip()).octets());
    header[17..19].copy_from_slice(&meta.addr.port().to_be_bytes());
    if let Some(dst) = meta.dst_ip {
        header[19..35].copy_from_slice(&v6(dst).octets());
    }
    header
}

fn decode_header(header: &[u8; HEADER_LEN], len: usize) -> RecvMeta {
    // The family as received: an IPv4-mapped source on a dual-stack socket stays IPv6.
    let ip = |bytes: &[u8], is_v6: bool| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(bytes);
        let v6 = Ipv6Addr::from(octets);
        match v6.to_ipv4_mapped() {
            Some(v4) if !is_v6 => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        }
    };
    let port = u16::from_be_bytes([header[17], header[18]]);
    RecvMeta {
        addr: SocketAddr::new(ip(&header[1..17], header[0] & 0b1000 != 0), port),
        len,
        stride: len,
        ecn: EcnCodepoint::from_bits((header[0] >> 1) & 0b11),
        dst_ip: (header[0] & 1 == 1).then(|| ip(&header[19..35], header[0] & 0b1_0000 != 0)),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_issuing_process_owns_its_connection_ids() {
        let (ours, theirs) = (CidTag::new(), CidTag::new());
        let cid = TaggedConnectionIds(ours.clone()).generate_cid();
        let mut short = vec![0x40];
        short.extend_from_slice(&cid);
        short.extend_from_slice(b"payload");
        assert!(ours.owns(&short));
        assert!(!theirs.owns(&short));
        let mut long = vec![0xc0, 0, 0, 0, 1, CID_LEN as u8];
        long.extend_from_slice(&cid);
        assert!(ours.owns(&long));
        // A client's first Initial carries a destination ID the client picked.
        let mut initial = vec![0xc0, 0, 0, 0, 1, 8];
        initial.extend_from_slice(&[7; 8]);
        assert!(!ours.owns(&initial));
        assert!(!ours.owns(&[]));
        assert!(!ours.owns(&[0xc0, 0, 0]));
    }

    /// A short-header packet of `len` bytes for connection `cid`.
    fn packet(cid: &[u8], len: usize, fill: u8) -> Vec<u8> {
        let mut packet = vec![0x40];
        packet.extend_from_slice(cid);
        packet.resize(len, fill);
        packet
    }

    #[tokio::test]
    async fn mixed_batches_keep_own_segments_in_order_and_forward_the_rest() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let tag = CidTag::new();
        let runtime = quinn::default_runtime().unwrap();
        let socket = HandoverUdpSocket::new(udp, tag.clone(), None, &runtime).unwrap();
        let (ours, theirs) = super::super::handover::seqpacket_pair().unwrap();
        socket.forward_to(ours);
        let own = TaggedConnectionIds(tag).generate_cid();
        let other = TaggedConnectionIds(CidTag::new()).generate_cid();
        // Batch 0: own, other, own (short last segment); batch 1: other only; batch 2: own.
        let mut first = packet(&own, 100, 1);
        first.extend(packet(&other, 100, 2));
        first.extend(packet(&own, 40, 3));
        let (mut b0, mut b1, mut b2) = (first, packet(&other, 100, 4), packet(&own, 60, 5));
        let mut bufs = [
            IoSliceMut::new(&mut b0),
            IoSliceMut::new(&mut b1),
            IoSliceMut::new(&mut b2),
        ];
        let from: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let meta = |len, stride| RecvMeta {
            addr: from,
            len,
            stride,
            ecn: None,
            dst_ip: None,
        };
        let mut metas = [meta(240, 100), meta(100, 100), meta(60, 60)];
        let kept = socket.keep_own(&mut bufs, &mut metas, 3);
        assert_eq!(kept, 2);
        assert_eq!((metas[0].len, metas[0].stride), (140, 100));
        assert_eq!(
            &bufs[0][..140],
            &[packet(&own, 100, 1), packet(&own, 40, 3)].concat()[..]
        );
        assert_eq!(metas[1].len, 60);
        assert_eq!(&bufs[1][..60], &packet(&own, 60, 5)[..]);
        // The two foreign segments went to the successor, each with its source.
        for fill in [2u8, 4] {
            let mut message = [0u8; 2048];
            let n = rustix::io::read(&theirs, &mut message).unwrap();
            let header: [u8; HEADER_LEN] = message[..HEADER_LEN].try_into().unwrap();
            assert_eq!(decode_header(&header, n - HEADER_LEN).addr, from);
            assert_eq!(&message[HEADER_LEN..n], &packet(&other, 100, fill)[..]);
        }
    }

    #[test]
    fn forwarded_headers_keep_addresses_and_ecn() {
        for (addr, dst) in [
            ("192.0.2.1:4433", Some("127.0.0.1")),
            ("[2001:db8::1]:443", None),
            ("[::ffff:192.0.2.1]:4433", Some("::ffff:127.0.0.1")),
        ] {
            let meta = RecvMeta {
                addr: addr.parse().unwrap(),
                len: 1200,
                stride: 1200,
                ecn: Some(EcnCodepoint::Ect0),
                dst_ip: dst.map(|d| d.parse().unwrap()),
            };
            let back = decode_header(&encode_header(&meta), 1200);
            assert_eq!(back.addr, meta.addr);
            assert_eq!(back.dst_ip, meta.dst_ip);
            assert_eq!(back.ecn, meta.ecn);
            assert_eq!(back.len, 1200);
        }
    }
}
