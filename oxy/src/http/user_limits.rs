//! Per-user limits: how many tunnels and requests one user may have at once on an
//! endpoint (`http.proxy_auth.users[].max_tunnels`/`max_requests`, and
//! `http.user_limits` for every user, those the request hook names included). A
//! request past its user's limit is answered 429 with `Retry-After`.

use super::body::text_response;
use crate::hooks::HttpBody;
use crate::settings::{HttpSettings, UserLimitSettings};
use http::{HeaderValue, Response, StatusCode, header};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Users kept before idle ones (no tunnel or request open) are forgotten.
const PRUNE_ABOVE: usize = 4096;

/// What one user may have open at once (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    tunnels: usize,
    requests: usize,
}

/// One user's open tunnels and requests.
struct Slots {
    tunnels: Option<Arc<Semaphore>>,
    requests: Option<Arc<Semaphore>>,
    limits: Limits,
}

impl Slots {
    fn new(limits: Limits) -> Self {
        let semaphore = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Self {
            tunnels: semaphore(limits.tunnels),
            requests: semaphore(limits.requests),
            limits,
        }
    }

    /// Whether nothing of this user's is open.
    fn idle(&self) -> bool {
        let full =
            |s: &Option<Arc<Semaphore>>, n| s.as_ref().is_none_or(|s| s.available_permits() == n);
        full(&self.tunnels, self.limits.tunnels) && full(&self.requests, self.limits.requests)
    }
}

/// An endpoint's per-user limits and what each user has open.
pub struct UserLimits {
    /// Whether any limit is set (most endpoints have none: nothing to look up).
    any: bool,
    by_user: HashMap<String, Limits>,
    default: Limits,
    retry_after: HeaderValue,
    open: Mutex<HashMap<String, Slots>>,
}

/// A user's place for one tunnel or request, given back when dropped.
pub struct UserPermit {
    _permit: OwnedSemaphorePermit,
}

impl UserLimits {
    /// The limits of an endpoint's `http` settings.
    pub fn new(settings: &HttpSettings) -> Self {
        let UserLimitSettings {
            max_tunnels,
            max_requests,
            retry_after,
        } = settings.user_limits;
        let default = Limits {
            tunnels: max_tunnels,
            requests: max_requests,
        };
        let by_user: HashMap<String, Limits> = (settings.proxy_auth.users.iter())
            .map(|user| {
                let own = Limits {
                    tunnels: if user.max_tunnels > 0 {
                        user.max_tunnels
                    } else {
                        default.tunnels
                    },
                    requests: if user.max_requests > 0 {
                        user.max_requests
                    } else {
                        default.requests
                    },
                };
                (user.name.clone(), own)
            })
            .collect();
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let unlimited = |l: &Limits| l.tunnels == 0 && l.requests == 0;
        Self {
            any: !unlimited(&default) || !by_user.values().all(unlimited),
            by_user,
            default,
            retry_after: HeaderValue::from(seconds.max(1)),
            open: Mutex::default(),
        }
    }

    /// A place for `user`'s tunnel (`tunnel`) or request, or why not. No user, or no
    /// limit for it, needs no place.
    pub fn admit(&self, user: Option<&str>, tunnel: bool) -> Result<Option<UserPermit>, TooMany> {
        let Some(user) = user.filter(|_| self.any) else {
            return Ok(None);
        };
        let limits = self.by_user.get(user).copied().unwrap_or(self.default);
        let limit = if tunnel {
            limits.tunnels
        } else {
            limits.requests
        };
        if limit == 0 {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() > PRUNE_ABOVE {
            open.retain(|_, slots| !slots.idle());
        }
        if !open.contains_key(user) {
            open.insert(user.to_string(), Slots::new(limits));
        }
        let Some(slots) = open.get(user) else {
            return Ok(None);
        };
        let semaphore = if tunnel {
            &slots.tunnels
        } else {
            &slots.requests
        };
        let permit = semaphore.as_ref().map(|s| s.clone().try_acquire_owned());
        match permit {
            Some(Ok(permit)) => Ok(Some(UserPermit { _permit: permit })),
            Some(Err(_)) => {
                let what = if tunnel { "tunnels" } else { "requests" };
                Err(TooMany {
                    reason: format!("too many {what} at once for user {user} (limit {limit})"),
                    retry_after: self.retry_after.clone(),
                })
            }
            None => Ok(None),
        }
    }
}

/// A user past its limit.
#[derive(Debug)]
pub struct TooMany {
    reason: String,
    retry_after: HeaderValue,
}

impl TooMany {
    /// The 429 that tells the client, with `Retry-After`.
    pub fn response(self) -> Response<HttpBody> {
        let mut response = text_response(StatusCode::TOO_MANY_REQUESTS, &self.reason);
        (response.headers_mut()).insert(header::RETRY_AFTER, self.retry_after);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ProxyUser;
    use std::time::Duration;

    fn settings(default: (usize, usize), users: &[(&str, usize, usize)]) -> HttpSettings {
        let mut http = HttpSettings::default();
        http.user_limits.max_tunnels = default.0;
        http.user_limits.max_requests = default.1;
        http.user_limits.retry_after = Duration::from_millis(1500);
        http.proxy_auth.users = (users.iter())
            .map(|&(name, max_tunnels, max_requests)| ProxyUser {
                name: name.into(),
                max_tunnels,
                max_requests,
                ..Default::default()
            })
            .collect();
        http
    }

    #[test]
    fn a_user_s_own_limits_fall_back_field_by_field_and_refusals_say_when_to_retry() {
        let limits = UserLimits::new(&settings((2, 0), &[("alice", 1, 0), ("bob", 0, 1)]));
        // alice: her own tunnel limit; no request limit anywhere.
        let held = limits.admit(Some("alice"), true).unwrap();
        assert!(held.is_some());
        let refused = limits.admit(Some("alice"), true).err().unwrap();
        assert_eq!(
            refused.reason,
            "too many tunnels at once for user alice (limit 1)"
        );
        assert_eq!(refused.retry_after, "2", "1.5 s rounds up");
        assert!(limits.admit(Some("alice"), false).unwrap().is_none());
        // bob: the default tunnel limit (2), his own request limit (1).
        let tunnels = [
            limits.admit(Some("bob"), true),
            limits.admit(Some("bob"), true),
        ];
        assert!(tunnels.iter().all(|t| matches!(t, Ok(Some(_)))));
        assert!(limits.admit(Some("bob"), true).is_err());
        let request = limits.admit(Some("bob"), false).unwrap();
        assert!(limits.admit(Some("bob"), false).is_err());
        // A place comes back when its permit is dropped.
        drop((held, request));
        assert!(matches!(limits.admit(Some("alice"), true), Ok(Some(_))));
        assert!(matches!(limits.admit(Some("bob"), false), Ok(Some(_))));
        // No user: not limited.
        assert!(limits.admit(None, true).unwrap().is_none());
    }

    #[test]
    fn an_endpoint_without_limits_keeps_no_state() {
        let limits = UserLimits::new(&settings((0, 0), &[("alice", 0, 0)]));
        assert!(!limits.any);
        for _ in 0..3 {
            assert!(limits.admit(Some("alice"), true).unwrap().is_none());
        }
        assert!(limits.open.lock().unwrap().is_empty());
    }
}
