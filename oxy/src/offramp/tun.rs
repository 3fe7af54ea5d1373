//! The TUN off-ramp (`ip.offramp: tun`): forwarded packets are written to a TUN device
//! as they are (TTL already decremented); the packets the device gives back go to the
//! session whose client holds their destination address.

use crate::drain::Drain;
use crate::tunnel::packet::{ToClient, oxy_ip};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tun_rs::AsyncDevice;

type Clients = Arc<Mutex<HashMap<IpAddr, ToClient>>>;

/// An endpoint's TUN device and the clients it delivers to.
pub struct TunOffRamp {
    device: Arc<AsyncDevice>,
    clients: Clients,
    reader: JoinHandle<()>,
}

/// A client's addresses on the off-ramp; dropping it stops delivery to them.
pub struct Attachment {
    clients: Clients,
    addresses: Vec<IpAddr>,
    to_client: ToClient,
}

impl TunOffRamp {
    /// Starts delivering what `device` reads, from when it is this process's to read
    /// until a successor has it (`drain`); `endpoint` labels the drop counter.
    pub fn start(device: Arc<AsyncDevice>, endpoint: &str, drain: Drain) -> Self {
        let clients = Clients::default();
        let deliver = deliver(device.clone(), clients.clone(), endpoint.to_string());
        let reader = tokio::spawn(async move {
            drain.devices_ours().await;
            tokio::select! {
                () = deliver => {}
                () = drain.handed_over() => {}
            }
        });
        Self {
            device,
            clients,
            reader,
        }
    }

    /// Delivers packets for `addresses` to `to_client` until the attachment is dropped.
    pub fn attach(&self, addresses: &[IpAddr], to_client: &ToClient) -> Attachment {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        for address in addresses {
            clients.insert(*address, to_client.clone());
        }
        Attachment {
            clients: self.clients.clone(),
            addresses: addresses.to_vec(),
            to_client: to_client.clone(),
        }
    }

    /// Writes one packet to the device without waiting; an `Err` names why it was
    /// dropped.
    pub fn send(&self, packet: &[u8]) -> Result<(), &'static str> {
        match self.device.try_send(packet) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err("queue_full"),
            Err(e) => {
                tracing::debug!(error = %e, "packet not written to the TUN device");
                Err("tun_error")
            }
        }
    }
}

impl Drop for TunOffRamp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        for address in &self.addresses {
            // Only this client's entry: the address may already serve a newer session.
            if clients
                .get(address)
                .is_some_and(|c| c.same_queue(&self.to_client))
            {
                clients.remove(address);
            }
        }
    }
}

/// Reads packets from the device and hands each to the client holding its destination.
async fn deliver(device: Arc<AsyncDevice>, clients: Clients, endpoint: String) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match device.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "TUN off-ramp stopped reading");
                return;
            }
        };
        let packet = &buf[..n];
        let Ok(ip) = etherparse::IpSlice::from_slice(packet) else {
            oxy_ip::dropped_total(&endpoint, "malformed").inc();
            continue;
        };
        // `send` never waits (a full queue drops and counts), so it runs under the lock.
        let clients = clients.lock().unwrap_or_else(|p| p.into_inner());
        match clients.get(&ip.destination_addr()) {
            Some(to_client) => {
                let _ = to_client.send(Bytes::copy_from_slice(packet));
            }
            None => oxy_ip::dropped_total(&endpoint, "no_client").inc(),
        }
    }
}
