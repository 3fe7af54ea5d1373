//! A privacy relay: CONNECT, CONNECT-UDP and CONNECT-IP (MASQUE) over HTTP/3 and HTTP/2
//! for users who present a bearer token or a client certificate, with a per-user tunnel
//! limit.
//! Public destinations only and no client addresses in logs come from its settings.

use oxy::http::body::text_response;
use oxy::http_types::{HeaderMap, Method, Response, StatusCode, header, request::Parts};
use oxy::prelude::*;
use oxy::settings::SettingError;
use std::collections::HashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The `app:` section.
#[oxy_app_settings]
pub struct RelaySettings {
    /// Who may use the relay.
    pub users: Vec<UserSettings>,
    /// Tunnels (CONNECT, CONNECT-UDP and CONNECT-IP) one user may have open at once.
    #[serde(default = "default_max_tunnels")]
    pub max_tunnels_per_user: usize,
}

fn default_max_tunnels() -> usize {
    16
}

/// A user, known by a bearer token, a client certificate, or both.
#[oxy_app_settings]
pub struct UserSettings {
    /// The user's name, in the audit records and metrics.
    pub name: String,
    /// SHA-256 of the user's bearer token, in hex (`printf %s "$TOKEN" | sha256sum`).
    /// Clients send `Proxy-Authorization: Bearer TOKEN` (or `Authorization`).
    pub token_sha256: String,
    /// A subject alternative name of the user's client certificate (`DNS:alice.example`,
    /// `email:alice@example.com`; any case), when the endpoint asks for client
    /// certificates.
    pub certificate_name: String,
}

#[metrics]
mod privacy_relay {
    /// Tunnels opened, by user.
    pub fn tunnels_total(user: &str) -> Counter;
    /// Requests refused, by reason (`unauthenticated`, `tunnel_limit`, `not_a_tunnel`).
    pub fn refused_total(reason: &str) -> Counter;
}

/// A request's context is the user's tunnel slot, held until the tunnel closes; the
/// users are read once, into the app context.
#[derive(OxyExt)]
#[oxy(app_settings = RelaySettings, app_context = Users, request_context = Option<OwnedSemaphorePermit>)]
struct PrivacyRelay;

/// The users, by token hash and by certificate name, and each user's tunnel slots.
#[derive(Default)]
struct Users {
    by_token: HashMap<[u8; 32], String>,
    by_certificate: HashMap<String, String>,
    slots: HashMap<String, Arc<Semaphore>>,
}

impl Users {
    fn new(settings: &RelaySettings) -> anyhow::Result<Self> {
        let mut users = Users::default();
        for (i, user) in settings.users.iter().enumerate() {
            let slots = settings.max_tunnels_per_user;
            users
                .add(user, slots)
                .map_err(|e| SettingError::at(format!("users[{i}]"), e))?;
        }
        Ok(users)
    }

    /// Adds `user`, with `slots` tunnels at once.
    fn add(&mut self, user: &UserSettings, slots: usize) -> anyhow::Result<()> {
        let name = &user.name;
        anyhow::ensure!(!name.is_empty(), "a user has no name");
        let token = &user.token_sha256;
        let digest: Option<[u8; 32]> = match token.len() {
            0 => None,
            64 if token.bytes().all(|b| b.is_ascii_hexdigit()) => Some(std::array::from_fn(|i| {
                u8::from_str_radix(&token[2 * i..2 * i + 2], 16).unwrap_or_default()
            })),
            _ => anyhow::bail!("user {name}: token_sha256 is not 64 hex digits"),
        };
        anyhow::ensure!(
            digest.is_some() || !user.certificate_name.is_empty(),
            "user {name}: set token_sha256 or certificate_name"
        );
        let semaphore = Arc::new(Semaphore::new(slots));
        anyhow::ensure!(
            self.slots.insert(name.clone(), semaphore).is_none(),
            "user {name} is listed twice"
        );
        if let Some(digest) = digest {
            self.by_token.insert(digest, name.clone());
        }
        if !user.certificate_name.is_empty() {
            let certificate = user.certificate_name.to_ascii_lowercase();
            self.by_certificate.insert(certificate, name.clone());
        }
        Ok(())
    }

    /// The user a client certificate or a bearer token names.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        cx: &RequestContext<PrivacyRelay>,
    ) -> Option<&String> {
        let certificate = cx
            .tls
            .as_ref()
            .and_then(|tls| tls.client_certificate.as_ref());
        let by_certificate = certificate.and_then(|c| {
            (c.sans.iter()).find_map(|san| self.by_certificate.get(&san.to_ascii_lowercase()))
        });
        by_certificate.or_else(|| {
            let value = [header::PROXY_AUTHORIZATION, header::AUTHORIZATION]
                .into_iter()
                .find_map(|name| headers.get(name)?.to_str().ok())?;
            let (scheme, token) = value.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            self.by_token
                .get(&boring::sha::sha256(token.trim().as_bytes()))
        })
    }
}

/// 407 asking for a bearer token.
fn authentication_required() -> Response<HttpBody> {
    let mut response = text_response(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "present a bearer token or a client certificate",
    );
    let challenge = header::HeaderValue::from_static("Bearer realm=\"privacy-relay\"");
    response
        .headers_mut()
        .insert(header::PROXY_AUTHENTICATE, challenge);
    response
}

#[async_trait]
impl HttpRequestHook<PrivacyRelay> for Users {
    /// Every request must be an authenticated tunnel within the user's limit.
    async fn on_request(
        &self,
        request: &mut Parts,
        cx: &mut RequestContext<PrivacyRelay>,
    ) -> RequestAction {
        let Some(user) = self.authenticate(&request.headers, cx) else {
            privacy_relay::refused_total("unauthenticated").inc();
            return RequestAction::Respond(authentication_required());
        };
        request.headers.remove(header::PROXY_AUTHORIZATION);
        request.headers.remove(header::AUTHORIZATION);
        if request.method != Method::CONNECT {
            privacy_relay::refused_total("not_a_tunnel").inc();
            return RequestAction::Block {
                status: StatusCode::METHOD_NOT_ALLOWED,
                reason: "this relay carries CONNECT, CONNECT-UDP and CONNECT-IP only".into(),
                headers: Default::default(),
            };
        }
        let Some(Ok(permit)) = self.slots.get(user).map(|s| s.clone().try_acquire_owned()) else {
            privacy_relay::refused_total("tunnel_limit").inc();
            return RequestAction::Block {
                status: StatusCode::TOO_MANY_REQUESTS,
                reason: format!("{user} has too many tunnels open"),
                headers: Default::default(),
            };
        };
        privacy_relay::tunnels_total(user).inc();
        cx.proxy_user = Some(user.clone());
        cx.app = Some(permit);
        RequestAction::Continue
    }
}

#[async_trait]
impl OxyApp for PrivacyRelay {
    fn app_context(settings: &AppServerSettings<Self>) -> anyhow::Result<Users> {
        anyhow::ensure!(
            !settings.telemetry.log.client_addresses,
            "set telemetry.log.client_addresses: false: the relay keeps no client addresses"
        );
        Users::new(&settings.app)
    }

    async fn start(_: AppServerSettings<Self>, users: Users) -> anyhow::Result<Hooks<Self>> {
        Ok(Hooks::of(users).http_request().into())
    }
}

fn main() -> OxyResult<()> {
    oxy::bootstrap::<PrivacyRelay>()
}
