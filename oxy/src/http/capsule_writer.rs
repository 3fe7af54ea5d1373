//! Writing to a MASQUE request stream: control capsules, and datagrams or packets as
//! HTTP Datagrams (HTTP/3) or DATAGRAM capsules, several capsules per write when they
//! queue up. CONNECT-UDP and CONNECT-IP (and oxy-client) share it.

use super::capsule;
use crate::tunnel::udp::DatagramSink;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Most bytes of capsules gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Writes queued datagrams to the stream as DATAGRAM capsules until the queue closes or
/// the stream fails.
pub async fn write_capsules<W: AsyncWrite + Unpin>(rx: mpsc::Receiver<Bytes>, write: &mut W) {
    write_capsule_stream(write, None, rx, None).await;
}

/// Writes the encoded capsules of `control` as they come, and each payload of
/// `datagrams` as an HTTP Datagram through `h3` when there is one and it fits, else as a
/// DATAGRAM capsule (context ID 0). Returns when both queues have closed or the stream
/// cannot be written.
pub async fn write_capsule_stream<W: AsyncWrite + Unpin>(
    write: &mut W,
    mut control: Option<mpsc::Receiver<Bytes>>,
    mut datagrams: mpsc::Receiver<Bytes>,
    mut h3: Option<Box<dyn DatagramSink>>,
) {
    let mut buf = BytesMut::new();
    let mut add = |buf: &mut BytesMut, datagram: &[u8]| {
        if h3.as_mut().is_none_or(|sink| sink.send(datagram).is_err()) {
            capsule::encode_udp_datagram_capsule(buf, datagram);
        }
    };
    loop {
        let next_control = async {
            match control.as_mut() {
                Some(control) => control.recv().await,
                None => None,
            }
        };
        tokio::select! {
            Some(capsule) = next_control => buf.extend_from_slice(&capsule),
            Some(datagram) = datagrams.recv() => {
                add(&mut buf, &datagram);
                while buf.len() < WRITE_BATCH {
                    let Ok(datagram) = datagrams.try_recv() else { break };
                    add(&mut buf, &datagram);
                }
            }
            else => return,
        }
        if !buf.is_empty() {
            if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                return;
            }
            buf.clear();
        }
    }
}
