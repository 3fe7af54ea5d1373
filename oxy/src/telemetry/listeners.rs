//! The addresses every endpoint is bound to, as `GET /endpoints` reports them (JSON), so
//! a supervisor or a test harness that asked for port 0 learns the ports.

use bytes::Bytes;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// One endpoint's bound listeners.
#[derive(Debug, Serialize)]
pub struct EndpointListeners {
    /// The endpoint's name.
    pub name: String,
    /// `http`, `tcp`, `udp` or `tun`.
    pub protocol: &'static str,
    /// Its listeners: `listen` in order, then HTTP/3.
    pub listeners: Vec<BoundListener>,
}

/// One bound listener.
#[derive(Debug, Serialize)]
pub struct BoundListener {
    /// `tcp`, `udp`, `quic` or `tun`.
    pub transport: &'static str,
    /// The address it is bound to (the system's port when `listen` said port 0); for a
    /// TUN device, its first address with port 0.
    pub address: SocketAddr,
    /// The TUN device's name (`transport: tun`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// The `/endpoints` document, set once every listener is bound.
#[derive(Debug, Default)]
pub struct Listeners(OnceLock<Bytes>);

impl Listeners {
    /// Records the bound endpoints; only the first call counts.
    pub fn set(&self, endpoints: &[EndpointListeners]) {
        #[derive(Serialize)]
        struct Document<'a> {
            endpoints: &'a [EndpointListeners],
        }
        match serde_json::to_vec(&Document { endpoints }) {
            Ok(json) => {
                let _ = self.0.set(Bytes::from(json));
            }
            Err(e) => tracing::error!(error = %e, "cannot write the /endpoints document"),
        }
    }

    /// The JSON document, once every listener is bound.
    pub fn get(&self) -> Option<Bytes> {
        self.0.get().cloned()
    }
}
