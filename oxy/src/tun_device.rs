//! TUN devices (tun-rs): created with their addresses and MTU, brought up, and given
//! their routes over rtnetlink. Needs CAP_NET_ADMIN in the process's network namespace.

use crate::settings::TunSettings;
use ipnet::IpNet;
use std::io;
use std::sync::Arc;
use tun_rs::{AsyncDevice, DeviceBuilder};

/// Creates the device `settings` describe, up, with its addresses and routes.
pub async fn open(settings: &TunSettings) -> io::Result<Arc<AsyncDevice>> {
    let mut builder = DeviceBuilder::new().mtu(settings.mtu);
    if !settings.name.is_empty() {
        builder = builder.name(settings.name.clone());
    }
    for net in &settings.addresses {
        builder = match net {
            IpNet::V4(v4) => builder.ipv4(v4.addr(), v4.prefix_len(), None),
            IpNet::V6(v6) => builder.ipv6(v6.addr(), v6.prefix_len()),
        };
    }
    let device = builder.build_async()?;
    if !settings.routes.is_empty() {
        add_routes(device.if_index()?, &settings.routes).await?;
    }
    Ok(Arc::new(device))
}

/// Routes `routes` through the interface `index`.
async fn add_routes(index: u32, routes: &[IpNet]) -> io::Result<()> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let mut result = Ok(());
    for route in routes {
        let message = rtnetlink::RouteMessageBuilder::<std::net::IpAddr>::new()
            .destination_prefix(route.network(), route.prefix_len())
            .map_err(|e| io::Error::other(format!("route {route}: {e}")))?
            .output_interface(index)
            .build();
        if let Err(e) = handle.route().add(message).execute().await {
            result = Err(io::Error::other(format!("route {route}: {e}")));
            break;
        }
    }
    task.abort();
    result
}

/// The TUN device a predecessor handed over (`fd`), already configured.
#[allow(unsafe_code)]
pub(crate) fn adopt(fd: std::os::fd::OwnedFd) -> io::Result<Arc<AsyncDevice>> {
    use std::os::fd::IntoRawFd;
    // SAFETY: `fd` is an open TUN device descriptor this process owns; the device takes
    // ownership of it.
    let device = unsafe { AsyncDevice::from_fd(fd.into_raw_fd())? };
    Ok(Arc::new(device))
}

/// The device's descriptor, for handing it over to a successor.
#[allow(unsafe_code)]
pub(crate) fn descriptor(device: &AsyncDevice) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor stays open as long as `device`, which the borrow outlives not.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(device.as_raw_fd()) }
}
