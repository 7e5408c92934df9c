//! `apikeys`: API keys for the bkg host.
//!
//! Keys look like `bkg_<id>_<secret>`: an 8-hex-digit id and 256 random bits. A key is shown
//! once, at creation; the plugin stores only its SHA-256 (in its key-value store in the host),
//! and `verify` compares hashes in constant time. The host's auth middleware calls `verify`
//! through the bus for every key that is not the bootstrap admin key.

use bkg_abi::{export_plugin, Context, Error, Host, Manifest, Plugin, Request, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const SCOPES: &[&str] = &["admin", "invoke", "read"];

/// A stored key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    /// The visible start of the key, to tell keys apart in a list.
    pub prefix: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    scopes: Vec<String>,
    /// Lifetime in seconds from now.
    expires_in_s: Option<u64>,
    /// Or an absolute expiry (unix ms).
    expires_at_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdRequest {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    key: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
    Ok(hex(&bytes))
}

/// The id inside a key, if it has the right shape.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("bkg_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 8 && secret.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

pub struct ApiKeys {
    host: Host,
}

impl ApiKeys {
    fn load(&self, id: &str) -> Result<Option<KeyRecord>, Error> {
        match self.host.kv_get(&format!("key/{id}"))? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::internal(format!("damaged record: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    fn save(&self, record: &KeyRecord) -> Result<(), Error> {
        let bytes = serde_json::to_vec(record).map_err(|e| Error::internal(e.to_string()))?;
        self.host.kv_put(&format!("key/{}", record.id), &bytes)
    }

    fn create(&self, req: CreateRequest) -> Result<Response, Error> {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(Error::bad_request("name must have 1 to 64 characters"));
        }
        if req.scopes.is_empty() {
            return Err(Error::bad_request("give at least one scope: admin, invoke or read"));
        }
        if let Some(bad) = req.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
            return Err(Error::bad_request(format!(
                "unknown scope '{bad}': use admin, invoke or read"
            )));
        }
        let now = now_ms();
        let expires_at_ms = match (req.expires_in_s, req.expires_at_ms) {
            (Some(_), Some(_)) => {
                return Err(Error::bad_request("give expires_in_s or expires_at_ms, not both"))
            }
            (Some(s), None) => Some(now.saturating_add(s.saturating_mul(1000))),
            (None, Some(at)) if at <= now => {
                return Err(Error::bad_request("expires_at_ms is in the past"))
            }
            (None, at) => at,
        };
        let id = loop {
            let id = random_hex(4)?;
            if self.load(&id)?.is_none() {
                break id;
            }
        };
        let key = format!("bkg_{id}_{}", random_hex(32)?);
        let mut scopes = req.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let record = KeyRecord {
            id: id.clone(),
            name: name.to_string(),
            scopes,
            created_at_ms: now,
            expires_at_ms,
            revoked_at_ms: None,
            prefix: key[..13].to_string(),
            sha256: hex(&Sha256::digest(key.as_bytes())),
        };
        self.save(&record)?;
        self.host.info(&format!("created key {id} ({name}) with scopes {:?}", record.scopes));
        let mut shown = serde_json::to_value(KeyRecord { sha256: String::new(), ..record })
            .map_err(|e| Error::internal(e.to_string()))?;
        shown["key"] = serde_json::Value::String(key);
        Ok(Response::json(&shown)?.with_status(201))
    }

    fn list(&self) -> Result<Response, Error> {
        let mut keys = Vec::new();
        for k in self.host.kv_keys("key/")? {
            if let Some(mut r) = self.load(&k["key/".len()..])? {
                r.sha256.clear();
                keys.push(r);
            }
        }
        keys.sort_by_key(|r| r.created_at_ms);
        Response::json(&serde_json::json!({ "keys": keys }))
    }

    fn revoke(&self, req: IdRequest) -> Result<Response, Error> {
        let mut record = self
            .load(&req.id)?
            .ok_or_else(|| Error::not_found(format!("no key with id '{}'", req.id)))?;
        let already_revoked = record.revoked_at_ms.is_some();
        if !already_revoked {
            record.revoked_at_ms = Some(now_ms());
            self.save(&record)?;
            self.host.info(&format!("revoked key {}", record.id));
        }
        // Who the key was (for the host's event log), and whether this call revoked it.
        Response::json(&serde_json::json!({
            "id": record.id,
            "name": record.name,
            "scopes": record.scopes,
            "revoked_at_ms": record.revoked_at_ms,
            "already_revoked": already_revoked,
        }))
    }

    fn verify(&self, req: VerifyRequest) -> Result<Response, Error> {
        let invalid =
            |reason: &str| Response::json(&serde_json::json!({ "valid": false, "reason": reason }));
        let Some(id) = key_id(&req.key) else {
            return invalid("not a key apikeys issued: those look like bkg_<8 hex>_<64 hex>");
        };
        let Some(record) = self.load(id)? else { return invalid("unknown key") };
        let presented = hex(&Sha256::digest(req.key.as_bytes()));
        if !bool::from(presented.as_bytes().ct_eq(record.sha256.as_bytes())) {
            return invalid("unknown key");
        }
        if record.revoked_at_ms.is_some() {
            return invalid("revoked");
        }
        if record.expires_at_ms.is_some_and(|at| now_ms() >= at) {
            return invalid("expired");
        }
        Response::json(&serde_json::json!({
            "valid": true,
            "key_id": record.id,
            "scopes": record.scopes,
            "expires_at_ms": record.expires_at_ms,
        }))
    }
}

impl Plugin for ApiKeys {
    fn manifest() -> Manifest {
        Manifest::new("apikeys", "API keys", env!("CARGO_PKG_VERSION"))
            .description("API keys with scopes and expiry; verifies keys for the host")
            .admin_capability("create", "create a key: {name, scopes:[admin|invoke|read], expires_in_s?}; the key is shown once")
            .admin_capability("list", "list keys (never the keys themselves)")
            .admin_capability("revoke", "revoke a key: {id}")
            .admin_capability("verify", "check a key: {key} -> {valid, key_id, scopes}")
    }

    fn new(host: Host) -> Result<Self, Error> {
        Ok(ApiKeys { host })
    }

    fn invoke(
        &self,
        capability: &str,
        req: Request<'_>,
        _ctx: &Context<'_>,
    ) -> Result<Response, Error> {
        match capability {
            "create" => self.create(req.json()?),
            "list" => self.list(),
            "revoke" => self.revoke(req.json()?),
            "verify" => self.verify(req.json()?),
            other => Err(Error::not_found(format!("no capability {other}"))),
        }
    }
}

export_plugin!(ApiKeys);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape() {
        let secret = "a".repeat(64);
        assert_eq!(key_id(&format!("bkg_0123abcd_{secret}")), Some("0123abcd"));
        assert_eq!(key_id(&format!("bkg_0123abcz_{secret}")), None);
        assert_eq!(key_id("bkg_0123abcd_short"), None);
        assert_eq!(key_id("something else"), None);
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_hex(32).unwrap(), random_hex(32).unwrap());
        assert_eq!(random_hex(32).unwrap().len(), 64);
    }
}
