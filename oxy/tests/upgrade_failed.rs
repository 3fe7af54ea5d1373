//! A CONNECT whose upgrade fails after its 200 (the client went away before hyper handed
//! the stream over) still ends its tunnel: `on_tunnel_end` runs with `upgrade_failed`,
//! and the tunnel is counted as ended. No client can time that from outside, so the
//! pipeline is driven here with an upgrade that fails.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use async_trait::async_trait;
use oxy::Hooks;
use oxy::drain::Drain;
use oxy::endpoint::Endpoint;
use oxy::hooks::{TunnelContext, TunnelHook, TunnelSummary};
use oxy::http::body::empty;
use oxy::http::client::UpstreamClient;
use oxy::http::open_streams::OpenStreams;
use oxy::http::pipeline::Handler;
use oxy::http::upgrade::PendingUpgrade;
use oxy::services::Services;
use oxy::settings::{DnsSettings, EgressSettings, EndpointSettings, NoSettings};
use oxy::telemetry::audit::AuditLog;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(oxy::OxyExt)]
struct App;

/// Records why each tunnel ended.
#[derive(Default)]
struct Ends(Mutex<Vec<String>>);

#[async_trait]
impl TunnelHook<App> for Ends {
    async fn on_tunnel_end(&self, _cx: &mut TunnelContext<App>, summary: &TunnelSummary) {
        self.0.lock().unwrap().push(summary.close_reason.clone());
    }
}

#[tokio::test]
async fn a_connect_whose_upgrade_fails_after_the_200_ends_its_tunnel() {
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let accepting = tokio::spawn(async move { target.accept().await.map(|_| ()) });

    let ends = Arc::new(Ends::default());
    let hooks = Hooks::<App> {
        tunnel: Some(ends.clone()),
        ..Hooks::default()
    };
    let egress = EgressSettings {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        ..EgressSettings::default()
    };
    let services = Arc::new(Services {
        hooks,
        resolver: Arc::new(oxy::dns::DnsResolver::new(&DnsSettings::default(), None).unwrap()),
        policy: oxy::offramp::policy::EgressPolicy::new(&egress),
        happy_eyeballs: egress.happy_eyeballs.clone(),
        audit: AuditLog::Disabled,
    });
    let mut settings = EndpointSettings::<NoSettings> {
        name: "web".into(),
        ..Default::default()
    };
    settings.http.connect = true;
    let client = UpstreamClient::new(services.clone(), &settings.http.client, "web").unwrap();
    let drain = Drain::new();
    let handler = Arc::new(Handler {
        services,
        endpoint: Arc::new(Endpoint::new(settings, (), None).unwrap()),
        connection: oxy::hooks::Connection {
            id: 1,
            app: Default::default(),
        },
        client_addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        peer_addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        original_client: None,
        local_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        tls: None,
        drain: drain.clone(),
        client: Arc::new(client),
        hold: None,
        decapsulated: None,
        tunnel_id: None,
        tunnel_user: None,
        streams: OpenStreams::default(),
        http_upstream: None,
    });

    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(target_addr.to_string())
        .body(empty())
        .unwrap();
    request.extensions_mut().insert(PendingUpgrade::new(async {
        Err(std::io::Error::other(
            "the client went away before the upgrade",
        ))
    }));
    let response = handler.handle(request).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    accepting.await.unwrap().unwrap();

    tokio::time::timeout(Duration::from_secs(10), async {
        while ends.0.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("on_tunnel_end never ran");
    assert_eq!(*ends.0.lock().unwrap(), ["upgrade_failed"]);
    let metrics = oxy::telemetry::metrics::render();
    assert!(
        metrics.contains(r#"oxy_tunnel_ended_total{endpoint="web",reason="upgrade_failed"} 1"#),
        "{metrics}"
    );
}
