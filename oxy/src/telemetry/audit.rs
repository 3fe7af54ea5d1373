//! Audit records for L4 traffic: one JSON object per tunnel, to a file or the log stream.

use crate::hooks::Inspection;
use crate::metrics;
use crate::settings::AuditSettings;
use crate::tunnel::TunnelClient;
use serde::Serialize;
use std::borrow::Borrow;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Audit log health.
#[metrics]
pub mod oxy_audit {
    /// Audit records written, by sink (`file`, `log`).
    pub fn records_total(sink: &str) -> Counter;

    /// Audit records lost because the file writer fell behind or failed.
    pub fn dropped_total() -> Counter;
}

/// What happened to one tunnel.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// The tunnel's id, unique in this process; requests served inside a decapsulated
    /// tunnel carry it in their access log lines.
    pub tunnel_id: String,
    /// How the tunnel's contents were inspected (`http`, `intercepted`, `passed`,
    /// `blocked`), when the tunnel hook asked Oxy to look inside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inspection: Option<&'static str>,
    /// The endpoint that accepted the client.
    pub endpoint: String,
    /// `tcp`, `udp`, `ip` (one IP flow), `connect-ip` or `tun` (one packet session).
    pub protocol: &'static str,
    /// The client's address as the socket saw it (the load balancer, behind one);
    /// absent when `telemetry.log.client_addresses` is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<SocketAddr>,
    /// The original client, from a PROXY header (absent like `client`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_client: Option<SocketAddr>,
    /// The user the request that opened the tunnel was authenticated as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The egress hook's label for the tunnel (`EgressContext::audit_label`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The 5-tuple of an IP flow (protocol `ip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowTuple>,
    /// The destination as requested (`host:port`).
    pub target: String,
    /// The address connected to, when a connection was made.
    pub resolved: Option<SocketAddr>,
    /// Bytes from client to target.
    pub bytes_up: u64,
    /// Bytes from target to client.
    pub bytes_down: u64,
    /// Datagrams from client to target (0 for TCP).
    pub packets_up: u64,
    /// Datagrams from target to client (0 for TCP).
    pub packets_down: u64,
    /// When the tunnel started (RFC 3339, UTC).
    pub start: String,
    /// How long it lived, in milliseconds.
    pub duration_ms: u64,
    /// Why it closed.
    pub close_reason: String,
}

impl AuditRecord {
    /// Formats a start time for [`AuditRecord::start`].
    pub fn timestamp(at: SystemTime) -> String {
        humantime::format_rfc3339_millis(at).to_string()
    }

    /// Milliseconds for [`AuditRecord::duration_ms`].
    pub fn millis(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The addresses of an IP flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowTuple {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    /// The client-side address and port (ICMP echo: the identifier as the port).
    pub source: String,
    /// The destination address and port.
    pub destination: String,
}

/// Bytes and datagrams a tunnel carried each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    /// Bytes from client to target.
    pub bytes_up: u64,
    /// Bytes from target to client.
    pub bytes_down: u64,
    /// Datagrams from client to target (0 for TCP).
    pub packets_up: u64,
    /// Datagrams from target to client (0 for TCP).
    pub packets_down: u64,
}

/// A new tunnel id: 16 hex digits, unique in this process and not guessable from the
/// previous one.
fn next_tunnel_id() -> String {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key = KEY.get_or_init(std::hash::RandomState::new);
    let hash = key.hash_one(next);
    // Written digit by digit: `format!`, or collecting `char`s, costs more than the
    // rest of the id.
    let mut digits = [0u8; 16];
    for (place, digit) in digits.iter_mut().rev().enumerate() {
        *digit = b"0123456789abcdef"[(hash >> (place * 4)) as usize & 0xf];
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// What a tunnel's audit record knows from its start; [`AuditStart::record`] completes it
/// when the tunnel is refused or ends.
#[derive(Debug, Clone)]
pub struct AuditStart {
    id: String,
    /// How the tunnel's contents were inspected.
    pub inspection: Inspection,
    endpoint: String,
    protocol: &'static str,
    client: Option<SocketAddr>,
    original_client: Option<SocketAddr>,
    user: Option<String>,
    /// The egress hook's label, once it has run.
    pub label: Option<String>,
    /// The 5-tuple, for an IP flow.
    pub flow: Option<FlowTuple>,
    started_at: SystemTime,
    started: Instant,
}

impl AuditStart {
    /// A tunnel of `protocol` (`tcp`, `udp`) starting now for `client`; its addresses
    /// are left out when `telemetry.log.client_addresses` is off.
    pub fn now<App: crate::app::OxyExt>(
        endpoint: &str,
        protocol: &'static str,
        client: &TunnelClient<App>,
    ) -> Self {
        let shown = crate::telemetry::logging::client_addresses_shown();
        Self {
            id: next_tunnel_id(),
            inspection: Inspection::None,
            endpoint: endpoint.to_string(),
            protocol,
            client: shown.then_some(client.peer_addr),
            original_client: client.original_client.filter(|_| shown),
            user: client.proxy_user.clone(),
            label: None,
            flow: None,
            started_at: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// The tunnel's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How long the tunnel has existed.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The record of the tunnel to `target` (connected to `resolved`), closed for `reason`.
    pub fn record(
        &self,
        target: String,
        resolved: Option<SocketAddr>,
        traffic: Traffic,
        reason: String,
    ) -> AuditRecord {
        AuditRecord {
            tunnel_id: self.id.clone(),
            inspection: (self.inspection != Inspection::None).then(|| self.inspection.as_str()),
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            client: self.client,
            original_client: self.original_client,
            user: self.user.clone(),
            label: self.label.clone(),
            flow: self.flow.clone(),
            target,
            resolved,
            bytes_up: traffic.bytes_up,
            bytes_down: traffic.bytes_down,
            packets_up: traffic.packets_up,
            packets_down: traffic.packets_down,
            start: AuditRecord::timestamp(self.started_at),
            duration_ms: AuditRecord::millis(self.elapsed()),
            close_reason: reason,
        }
    }
}

/// Where audit records go.
#[derive(Clone)]
pub enum AuditLog {
    /// Auditing is off.
    Disabled,
    /// Records are log events with target `oxy::audit`.
    Log,
    /// Records are lines appended to a file by a writer task.
    File(mpsc::Sender<String>),
}

/// Records queued for the file writer before new ones are dropped (and counted).
const FILE_QUEUE: usize = 4096;

impl AuditLog {
    /// Opens the sink the settings name; the handle (for a file) ends once every
    /// `AuditLog` clone is dropped and the queue is written.
    pub async fn open(settings: &AuditSettings) -> std::io::Result<(Self, Option<JoinHandle<()>>)> {
        if !settings.enabled {
            return Ok((AuditLog::Disabled, None));
        }
        if settings.path.as_os_str().is_empty() {
            return Ok((AuditLog::Log, None));
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.path)
            .await?;
        let (tx, mut rx) = mpsc::channel::<String>(FILE_QUEUE);
        let path = settings.path.clone();
        let writer = tokio::spawn(async move {
            let mut file = tokio::io::BufWriter::new(file);
            while let Some(line) = rx.recv().await {
                let mut result = file.write_all(line.as_bytes()).await;
                if result.is_ok() && rx.is_empty() {
                    result = file.flush().await;
                }
                match result {
                    Ok(()) => oxy_audit::records_total("file").inc(),
                    Err(e) => {
                        oxy_audit::dropped_total().inc();
                        tracing::error!(path = %path.display(), error = %e, "audit write failed");
                    }
                }
            }
            if let Err(e) = file.flush().await {
                tracing::error!(path = %path.display(), error = %e, "audit flush failed");
            }
        });
        Ok((AuditLog::File(tx), Some(writer)))
    }

    /// Writes one record.
    pub fn write(&self, record: &AuditRecord) {
        self.write_with(|| record);
    }

    /// Writes the record `record` makes, which is made only when it is written (not
    /// when the audit log is off, or its level filtered out).
    pub fn write_with<R: Borrow<AuditRecord>>(&self, record: impl FnOnce() -> R) {
        let line = match self {
            AuditLog::Disabled => return,
            AuditLog::Log if !tracing::enabled!(target: "oxy::audit", tracing::Level::INFO) => {
                return;
            }
            _ => match serde_json::to_string(record().borrow()) {
                Ok(line) => line,
                Err(e) => {
                    oxy_audit::dropped_total().inc();
                    tracing::error!(error = %e, "audit record not serializable");
                    return;
                }
            },
        };
        match self {
            AuditLog::Disabled => {}
            AuditLog::Log => {
                oxy_audit::records_total("log").inc();
                tracing::info!(target: "oxy::audit", record = %line, "audit");
            }
            AuditLog::File(tx) => {
                if tx.try_send(line + "\n").is_err() {
                    oxy_audit::dropped_total().inc();
                    tracing::warn!("audit queue full; record dropped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_ids_are_sixteen_hex_digits_and_distinct() {
        let ids: Vec<String> = (0..100).map(|_| next_tunnel_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
