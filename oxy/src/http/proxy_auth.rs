//! Basic proxy authentication (RFC 9110 §11.7.1, RFC 7617): checking `Proxy-Authorization`
//! and answering 407 with `Proxy-Authenticate`. Applications that authenticate their own
//! way use these helpers from their request hook.

use super::body::text_response;
use crate::hooks::HttpBody;
use crate::settings::ProxyAuthSettings;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

/// The user name and password of a `Proxy-Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::PROXY_AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A 407 response asking for Basic credentials in `realm`.
pub fn authentication_required(realm: &str) -> Response<HttpBody> {
    let mut response = text_response(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "proxy authentication required",
    );
    let challenge = format!("Basic realm=\"{}\"", realm.replace(['"', '\\'], ""));
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::PROXY_AUTHENTICATE, value);
    }
    response
}

/// The authenticated user, if the request's credentials match one in `settings`.
pub fn authenticate(settings: &ProxyAuthSettings, headers: &HeaderMap) -> Option<String> {
    let (name, password) = basic_credentials(headers)?;
    settings
        .users
        .iter()
        .find(|user| {
            // Compare every byte whatever the first difference, so timing tells nothing.
            constant_time_eq(user.name.as_bytes(), name.as_bytes())
                & constant_time_eq(user.password.as_bytes(), password.as_bytes())
        })
        .map(|user| user.name.clone())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ProxyUser;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn credentials_are_checked() {
        let settings = ProxyAuthSettings {
            enabled: true,
            realm: "oxy".into(),
            users: vec![ProxyUser {
                name: "alice".into(),
                password: "s3cret".into(),
                ..Default::default()
            }],
        };
        // alice:s3cret
        assert_eq!(
            authenticate(&settings, &headers("Basic YWxpY2U6czNjcmV0")),
            Some("alice".into())
        );
        assert_eq!(
            authenticate(&settings, &headers("basic  YWxpY2U6czNjcmV0 ")),
            Some("alice".into())
        );
        // alice:wrong
        assert_eq!(
            authenticate(&settings, &headers("Basic YWxpY2U6d3Jvbmc=")),
            None
        );
        assert_eq!(authenticate(&settings, &headers("Bearer abc")), None);
        assert_eq!(authenticate(&settings, &headers("Basic !!!")), None);
        assert_eq!(authenticate(&settings, &HeaderMap::new()), None);
        let challenge = authentication_required("my \"realm\"");
        assert_eq!(
            challenge.status(),
            StatusCode::PROXY_AUTHENTICATION_REQUIRED
        );
        assert_eq!(
            challenge.headers()[header::PROXY_AUTHENTICATE],
            "Basic realm=\"my realm\""
        );
    }
}
