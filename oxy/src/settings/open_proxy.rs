//! Warnings for endpoints that would be open proxies: forwarding, CONNECT, CONNECT-UDP or
//! CONNECT-IP
//! on an address other hosts can reach, with neither proxy authentication nor required
//! client certificates.

use super::{ClientAuth, EndpointProtocol, EndpointSettings};

/// One line per endpoint that proxies for anyone who reaches a non-loopback address of
/// it. An application whose request hook authenticates clients can ignore them.
pub fn open_proxy_warnings<E>(endpoints: &[EndpointSettings<E>]) -> Vec<String> {
    endpoints
        .iter()
        .filter(|endpoint| endpoint.protocol == EndpointProtocol::Http)
        .filter_map(|endpoint| {
            let http = &endpoint.http;
            let mut proxies = Vec::new();
            if http.forward_proxy {
                proxies.push("forward_proxy");
            }
            if http.connect {
                proxies.push("connect");
            }
            if http.connect_udp.enabled {
                proxies.push("connect_udp");
            }
            if http.connect_ip.enabled {
                proxies.push("connect_ip");
            }
            let reachable = endpoint
                .listen
                .iter()
                .chain(&http.h3.listen)
                .find(|addr| !addr.ip().is_loopback())?;
            let authenticated = http.proxy_auth.enabled
                || (endpoint.tls.enabled && endpoint.tls.client_auth == ClientAuth::Required);
            (!proxies.is_empty() && !authenticated).then(|| {
                format!(
                    "endpoint {}: {} on {reachable} without proxy_auth or required client \
                     certificates: anyone who reaches it can use it as a proxy",
                    endpoint.name,
                    proxies.join(", "),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(listen: &str) -> EndpointSettings<()> {
        let mut endpoint = EndpointSettings::<()> {
            name: "main".into(),
            listen: vec![listen.parse().unwrap()],
            ..Default::default()
        };
        endpoint.http.connect = true;
        endpoint
    }

    #[test]
    fn open_proxies_on_reachable_addresses_are_named() {
        assert!(open_proxy_warnings(&[endpoint("127.0.0.1:8080")]).is_empty());
        assert!(open_proxy_warnings(&[endpoint("[::1]:8080")]).is_empty());
        let warnings = open_proxy_warnings(&[endpoint("0.0.0.0:8080")]);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("endpoint main: connect on 0.0.0.0:8080"),
            "{warnings:?}"
        );
        let mut authenticated = endpoint("0.0.0.0:8080");
        authenticated.http.proxy_auth.enabled = true;
        assert!(open_proxy_warnings(&[authenticated]).is_empty());
        let mut closed = endpoint("0.0.0.0:8080");
        closed.http.connect = false;
        assert!(open_proxy_warnings(&[closed]).is_empty());
    }
}
