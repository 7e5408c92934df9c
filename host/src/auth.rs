//! API-key authentication and scopes, failing closed.
//!
//! Every request to `/api/...`, `/ws/...`, `/metrics` or a plugin's claimed prefix needs
//! `Authorization: Bearer <key>` (WebSockets may pass `?access_token=<key>` instead, since
//! browsers cannot set headers on them). A key is accepted if it is the bootstrap admin key
//! (its hash is in the store) or if the auth provider plugin (`apikeys`) verifies it through
//! the bus. When no provider is running, only the bootstrap key is accepted.
//!
//! Verifications are cached for a short time keyed by the key's hash; the cache is dropped
//! whenever the provider is invoked for anything other than `verify` (a revoke, say), and
//! is never used while the provider is not running. With several hosts on one PostgreSQL a
//! key created or revoked on another host reaches this one as a change (`crate::sync` calls
//! [`Auth::changed_elsewhere`]): the cache is dropped then too, at once, not after its TTL.
//! While the store says the database is unreachable, a key verified before is served from the
//! cache past its TTL, a key never verified is 503 `database_unavailable` (not 401), and admin
//! writes are refused with that 503 before they run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{HttpMessage, ResponseError};
use bkg_abi::ffi::CallKind;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::dispatch::{self, Answer, Routing};
use crate::error::ApiError;
use crate::exec;
use crate::state::AppState;
use crate::store::Store;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Call plugins.
    Invoke,
    /// GET requests only.
    Read,
}

/// Who made a request.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub key_id: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| *s == Scope::Admin || *s == needed)
    }

    /// How the event log names this principal.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }
}

/// The key id of the bootstrap admin key.
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";

const BOOTSTRAP_SETTING: &str = "bootstrap_admin_key_sha256";
const CACHE_TTL: Duration = Duration::from_secs(30);

/// How long a verification is used without asking the provider again: `CACHE_TTL`, or
/// `BKG_AUTH_CACHE_TTL_MS` (a test hook: `it/postgres_outage.rs` makes it short, so that its
/// calls during an outage run on verifications past their TTL).
fn cache_ttl() -> Duration {
    static TTL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TTL.get_or_init(|| {
        std::env::var("BKG_AUTH_CACHE_TTL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(CACHE_TTL, Duration::from_millis)
    })
}

fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A verified key: who it is, when it was verified, when it expires (unix ms).
/// The last field is the provider's write count (`Routing::provider_writes`) when the
/// verification was asked for: an entry older than the provider's last write is not used.
type CachedKey = (Principal, Instant, Option<u64>, u64);

/// The auth state of the host.
pub struct Auth {
    bootstrap: [u8; 32],
    /// The plugin id that verifies keys.
    pub provider: String,
    cache: Mutex<HashMap<[u8; 32], CachedKey>>,
    /// How many of the provider's writes made on other hosts `sync` reported: added to the
    /// local write count the cache is keyed to, so that a verification racing with one is not
    /// cached either.
    remote_writes: std::sync::atomic::AtomicU64,
}

/// The answer of the provider's `verify` capability.
#[derive(Debug, Deserialize)]
struct Verified {
    valid: bool,
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    scopes: Vec<Scope>,
    #[serde(default)]
    expires_at_ms: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

impl Auth {
    /// Set up the bootstrap admin key: from `env_key` (BKG_ADMIN_KEY) if given, else the one
    /// whose hash is stored, else a new random key, printed once. Returns the new key if one
    /// was generated.
    pub fn init(
        store: &Store,
        env_key: Option<&str>,
        provider: &str,
    ) -> anyhow::Result<(Auth, Option<String>)> {
        let mut generated = None;
        let hash = match env_key.filter(|k| !k.is_empty()) {
            Some(key) => {
                if key.len() < 16 {
                    anyhow::bail!("BKG_ADMIN_KEY must have at least 16 characters");
                }
                let hash = sha256(key);
                store.set_setting(BOOTSTRAP_SETTING, &hex(&hash))?;
                hash
            }
            None => match store.setting(BOOTSTRAP_SETTING)? {
                Some(stored) => {
                    let mut hash = [0u8; 32];
                    if stored.len() != 64 {
                        anyhow::bail!(
                            "the stored bootstrap key hash is damaged; set BKG_ADMIN_KEY"
                        );
                    }
                    for (i, chunk) in stored.as_bytes().chunks(2).enumerate() {
                        let text = std::str::from_utf8(chunk)?;
                        hash[i] = u8::from_str_radix(text, 16)?;
                    }
                    hash
                }
                None => {
                    let mut secret = [0u8; 32];
                    getrandom::fill(&mut secret)
                        .map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                    let key = format!("bkg_admin_{}", hex(&secret));
                    let hash = sha256(&key);
                    store.set_setting(BOOTSTRAP_SETTING, &hex(&hash))?;
                    generated = Some(key);
                    hash
                }
            },
        };
        Ok((
            Auth {
                bootstrap: hash,
                provider: provider.to_string(),
                cache: Mutex::default(),
                remote_writes: Default::default(),
            },
            generated,
        ))
    }

    fn is_bootstrap(&self, hash: &[u8; 32]) -> bool {
        bool::from(self.bootstrap.ct_eq(hash))
    }

    /// Forget every cached verification.
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The provider's keys changed on another host sharing the database (a key created or
    /// revoked there): drop every cached verification, and any one in flight now.
    pub fn changed_elsewhere(&self) {
        self.remote_writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.clear_cache();
    }

    fn cached(&self, hash: &[u8; 32], writes: u64) -> Option<Principal> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (principal, at, expires, seen) = cache.get(hash)?;
        let expired = expires.is_some_and(|e| crate::clock::now_ms() >= e);
        (at.elapsed() < cache_ttl() && !expired && *seen == writes).then(|| principal.clone())
    }

    /// A key this host verified before, while the database is unreachable: served past its
    /// TTL (not past its expiry, nor past a write to the provider), so that clients keep
    /// working through an outage. A key never verified here cannot be checked: 503
    /// `database_unavailable`, not 401.
    fn verify_during_outage(&self, hash: &[u8; 32], writes: u64) -> Result<Principal, ApiError> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((principal, _, expires, seen)) = cache.get(hash) {
            let expired = expires.is_some_and(|e| crate::clock::now_ms() >= e);
            if !expired && *seen == writes {
                return Ok(principal.clone());
            }
        }
        Err(crate::error::database_unavailable(&format!(
            "cannot verify this API key: the database is unreachable, so the auth provider '{}' \
             cannot read its keys, and this host has not verified this key before; the host \
             reconnects by itself: retry shortly",
            self.provider
        )))
    }

    /// Check a presented key.
    async fn verify(&self, state: &AppState, key: &str) -> Result<Principal, ApiError> {
        let hash = sha256(key);
        if self.is_bootstrap(&hash) {
            return Ok(Principal { key_id: BOOTSTRAP_KEY_ID.into(), scopes: vec![Scope::Admin] });
        }
        // Shaped like the bootstrap key (`bkg_admin_<64 hex>`) but not it: say so, rather than
        // what the provider makes of a shape it never issues.
        let bootstrap_shaped = looks_like_bootstrap(key);
        let provider_running = state.routing.get(&self.provider).is_some_and(|i| i.is_running());
        if !provider_running {
            return Err(unauthorized(&if bootstrap_shaped {
                format!(
                    "invalid API key (not the bootstrap admin key; the auth provider '{}' is not running, so no other key is accepted)",
                    self.provider
                )
            } else {
                format!(
                    "invalid API key (the auth provider '{}' is not running, so only the bootstrap admin key is accepted)",
                    self.provider
                )
            }));
        }
        // Any call to the provider but `verify` (a revoke over HTTP, or by another plugin
        // over the bus) moves this count on and so invalidates what was cached before it.
        let writes = state
            .routing
            .provider_writes()
            .wrapping_add(self.remote_writes.load(std::sync::atomic::Ordering::SeqCst));
        if let Some(p) = self.cached(&hash, writes) {
            return Ok(p);
        }
        if state.store.is_down() {
            return self.verify_during_outage(&hash, writes);
        }
        let body = serde_json::json!({ "key": key }).to_string().into_bytes();
        let request =
            exec::request(CallKind::Capability, "verify", "POST", "", "application/json", body);
        let answer = dispatch::call(&state.routing, &self.provider, request, || false).await;
        // The database went away during the call (the provider could not read its keys).
        if answer.is_err() && state.store.is_down() {
            return self.verify_during_outage(&hash, writes);
        }
        let answer = answer.map_err(|e| {
            tracing::warn!("auth provider failed: {e:?}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "the auth provider did not answer",
            )
        })?;
        let Answer::Complete(reply) = answer else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "the auth provider streamed",
            ));
        };
        let verified: Verified = serde_json::from_slice(&reply.body).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                format!("bad verify answer: {e}"),
            )
        })?;
        if !verified.valid {
            if bootstrap_shaped {
                return Err(unauthorized(&format!(
                    "invalid API key (not the bootstrap admin key, and unknown to '{}')",
                    self.provider
                )));
            }
            let reason = verified.reason.unwrap_or_else(|| "unknown key".into());
            return Err(unauthorized(&format!("invalid API key ({reason})")));
        }
        let principal = Principal { key_id: verified.key_id, scopes: verified.scopes };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, (principal.clone(), Instant::now(), verified.expires_at_ms, writes));
        Ok(principal)
    }
}

/// True for a key shaped like the bootstrap admin keys the host generates.
fn looks_like_bootstrap(key: &str) -> bool {
    key.strip_prefix("bkg_admin_")
        .is_some_and(|secret| secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Why a request path is refused before routing.
#[derive(Debug, PartialEq, Eq)]
pub struct NonCanonical(pub String);

/// The path a request is authorised on, which must be the very path actix-web routes on.
///
/// actix-web matches routes against the raw path with every `%XX` decoded except `%2F`,
/// `%25` and `%2B`, and matches segment by segment without resolving `.`, `..` or `//`. So
/// that the scope can never be decided on a different string than the one that picks the
/// handler, a path is accepted only when it is canonical: fully decoding it gives valid UTF-8
/// without control characters, that decoding is exactly actix-web's routed path (no encoded
/// `/`, `%` or `+`, which would decode a second time in a handler's path parameters), and no
/// segment is empty (`//`), `.` or `..`. A trailing `/` is allowed (it names another route,
/// which then does not exist). Anything else is answered 400 before routing.
pub fn canonical_path<'a>(raw: &str, routed: &'a str) -> Result<&'a str, NonCanonical> {
    let refuse = |why: &str| Err(NonCanonical(why.to_string()));
    if !raw.starts_with('/') {
        return refuse("the path must start with '/'");
    }
    if !raw.contains('%') {
        // Nothing to decode (the common case): no allocation.
        if raw.chars().any(char::is_control) {
            return refuse("the path holds a control character");
        }
        if raw != routed {
            return refuse("the path is not the one the router sees");
        }
        return check_segments(routed);
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => decoded.push(b),
                None => return refuse("a '%' in the path is not followed by two hex digits"),
            }
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let Ok(decoded) = String::from_utf8(decoded) else {
        return refuse(
            "the path is not valid UTF-8 once decoded (an overlong or broken %-encoding)",
        );
    };
    if decoded.chars().any(char::is_control) {
        return refuse("the path holds a control character");
    }
    if decoded != routed {
        return refuse("an encoded '/', '%' or '+' in the path is refused");
    }
    check_segments(routed)
}

/// No `.`, `..` or empty segment (`//`); an empty last segment (a trailing `/`) is allowed.
fn check_segments(path: &str) -> Result<&str, NonCanonical> {
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment == "." || segment == ".." {
            return Err(NonCanonical("'.' and '..' path segments are refused".into()));
        }
        if segment.is_empty() && segments.peek().is_some() {
            return Err(NonCanonical("empty path segments ('//') are refused".into()));
        }
    }
    Ok(path)
}

/// The scope a request needs, or None for public routes. `path` is the canonical, decoded
/// path actix-web routes on (see [`canonical_path`]); matching is exact and case-sensitive,
/// as actix-web's is, so a path that reaches a handler is judged as that handler's route.
///
/// Public: `/healthz`, `/readyz`, `/api/openapi.json`, and GET/HEAD of anything outside
/// `/api`, `/ws`, `/metrics` and the claimed prefixes (the admin UI's files; anything else
/// there is a 404). Everything else needs a key.
pub fn required_scope(method: &Method, path: &str, routing: &Routing) -> Option<Scope> {
    let read_or_admin =
        if method == Method::GET || method == Method::HEAD { Scope::Read } else { Scope::Admin };
    if path == "/healthz" || path == "/readyz" || path == "/api/openapi.json" {
        return None;
    }
    let under = |prefix: &str| {
        path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
    };
    if under("/metrics") || under("/ws") {
        return Some(Scope::Read);
    }
    if under("/api/core") {
        return Some(read_or_admin);
    }
    if let Some(rest) = path.strip_prefix("/api/plugins/") {
        let mut parts = rest.splitn(3, '/');
        let (id, second) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if second == "admin" {
            return Some(read_or_admin);
        }
        let needs_admin = routing
            .get(id)
            .and_then(|i| {
                i.manifest
                    .capabilities
                    .iter()
                    .find(|c| c.name == second)
                    .map(|c| c.scope == "admin")
            })
            .unwrap_or(false);
        return Some(if needs_admin { Scope::Admin } else { Scope::Invoke });
    }
    if under("/api") || routing.prefix_owner(path).is_some() {
        return Some(Scope::Invoke);
    }
    if method == Method::GET || method == Method::HEAD {
        None
    } else {
        Some(Scope::Invoke)
    }
}

fn presented_key(req: &ServiceRequest, websocket: bool) -> Option<String> {
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let text = value.to_str().ok()?;
        let (scheme, key) = text.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim().to_string());
    }
    if websocket {
        return req
            .query_string()
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
            .map(percent_decode);
    }
    None
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The middleware: authenticate, authorise, remember the principal; drop the verification
/// cache after any call to the provider other than `verify`.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    // Everything the path decides, taken while it is borrowed from the request.
    let decided = canonical_path(req.path(), req.match_info().as_str()).map(|path| {
        let needed = required_scope(req.method(), path, &state.routing);
        let websocket = path.starts_with("/ws/");
        let touches_provider = path
            .strip_prefix("/api/plugins/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(id, cap)| id == state.auth.provider && cap != "verify");
        (needed, websocket, touches_provider)
    });
    let (needed, websocket, touches_provider) = match decided {
        Ok(decided) => decided,
        Err(NonCanonical(why)) => {
            let e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_path",
                format!("{why}: send the path in its plain form"),
            );
            return Ok(req.into_response(e.error_response()).map_into_right_body());
        }
    };
    let Some(needed) = needed else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let auth = &state.auth;
    let refuse = |req: ServiceRequest, e: ApiError| {
        Ok(req.into_response(e.error_response()).map_into_right_body())
    };
    let Some(key) = presented_key(&req, websocket) else {
        return refuse(
            req,
            unauthorized("this route needs an API key: send 'Authorization: Bearer <key>'"),
        );
    };
    let principal = match auth.verify(&state, &key).await {
        Ok(p) => p,
        Err(e) => return refuse(req, e),
    };
    if !principal.allows(needed) {
        let scope = serde_json::to_value(needed)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        return refuse(
            req,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key lacks the '{scope}' scope this route needs"),
            ),
        );
    }
    // An admin write, or a call to the auth provider's keys (create, revoke, list): while the
    // database is unreachable it cannot be stored, so it is refused before anything runs
    // (nothing half-applied, and the verification cache kept for the outage).
    let admin_write = req.path().starts_with("/api/core/")
        && req.method() != Method::GET
        && req.method() != Method::HEAD;
    if admin_write || touches_provider {
        let store = state.store.clone();
        let down = actix_web::web::block(move || store.ping().is_err() && store.is_down())
            .await
            .unwrap_or(false);
        if down {
            let what = if admin_write {
                "this admin write"
            } else {
                "this call to the auth provider's keys"
            };
            return refuse(
                req,
                crate::error::database_unavailable(&format!(
                    "{what} needs the database, which is unreachable: nothing was changed; the \
                     host reconnects by itself: retry shortly (plugin calls and reads are still \
                     served)"
                )),
            );
        }
    }
    req.extensions_mut().insert(principal);
    let response = next.call(req).await?;
    if touches_provider {
        auth.clear_cache();
    }
    Ok(response.map_into_left_body())
}

/// Shared so the registry can drop the cache when the provider is swapped or stopped.
pub type SharedAuth = Arc<Auth>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let admin = Principal { key_id: "a".into(), scopes: vec![Scope::Admin] };
        let reader = Principal { key_id: "r".into(), scopes: vec![Scope::Read] };
        assert!(admin.allows(Scope::Invoke) && admin.allows(Scope::Read));
        assert!(
            reader.allows(Scope::Read)
                && !reader.allows(Scope::Invoke)
                && !reader.allows(Scope::Admin)
        );
    }

    #[test]
    fn canonical_paths_are_the_routed_paths() {
        let ok = |raw: &str, routed: &str| canonical_path(raw, routed).map(str::to_string);
        assert_eq!(ok("/api/core/plugins", "/api/core/plugins"), Ok("/api/core/plugins".into()));
        assert_eq!(ok("/%61pi/core", "/api/core"), Ok("/api/core".into()));
        assert_eq!(ok("/api/core/", "/api/core/"), Ok("/api/core/".into()));
        assert_eq!(ok("/", "/"), Ok("/".into()));
        let refused = |raw: &str, routed: &str, why: &str| {
            let e = canonical_path(raw, routed).expect_err(raw);
            assert!(e.0.contains(why), "{raw}: {}", e.0);
        };
        refused("/api%2Fcore", "/api%2Fcore", "encoded '/'");
        refused("/api/%25", "/api/%25", "encoded '/'");
        refused("/api//core", "/api//core", "'//'");
        refused("/api/./core", "/api/./core", "'.'");
        refused("/api/%2e%2e/core", "/api/../core", "'..'");
        refused("/api/core/..", "/api/core/..", "'..'");
        refused("/%C0%AFapi", "/\u{FFFD}\u{FFFD}api", "UTF-8");
        refused("/api%FF", "/api\u{FFFD}", "UTF-8");
        refused("/api%0a", "/api\n", "control");
        refused("/api%2", "/api%2", "two hex digits");
        refused("*", "*", "start with '/'");
    }

    #[test]
    fn bootstrap_shape() {
        assert!(looks_like_bootstrap(&format!("bkg_admin_{}", "0a".repeat(32))));
        assert!(!looks_like_bootstrap(&format!("bkg_admin_{}", "0a".repeat(31))));
        assert!(!looks_like_bootstrap(&format!("bkg_0123abcd_{}", "0a".repeat(32))));
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("a%2Bb%20c"), "a+b c");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%2"), "bad%2");
    }
}
