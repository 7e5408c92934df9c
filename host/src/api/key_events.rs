//! Key creation and revocation in the event log: the host notices a successful call to the
//! auth provider's `create` or `revoke` capability and records who made it (the calling
//! key), with the key's id, name and scopes from the provider's answer. Never the key itself:
//! only named fields are copied, so the `key` a `create` answers with is never stored.

use super::*;

/// The provider's capabilities whose success is recorded, and the event kind of each.
fn event_kind(capability: &str) -> Option<&'static str> {
    match capability {
        "create" => Some("key_created"),
        "revoke" => Some("key_revoked"),
        _ => None,
    }
}

/// True for a call of the auth provider that this module records.
pub(crate) fn recorded(state: &AppState, id: &str, capability: &str) -> bool {
    id == state.auth.provider && event_kind(capability).is_some()
}

/// The event's details from the provider's answer: `None` when there is nothing to record
/// (the key was already revoked, or the answer is not the expected JSON object).
fn details(capability: &str, answer: &[u8]) -> Option<serde_json::Value> {
    let answer: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let answer = answer.as_object()?;
    if capability == "revoke" && answer.get("already_revoked") == Some(&true.into()) {
        return None;
    }
    answer.get("id")?.as_str()?;
    let mut details = serde_json::Map::new();
    for field in ["id", "name", "scopes", "expires_at_ms", "revoked_at_ms"] {
        if let Some(value) = answer.get(field).filter(|v| !v.is_null()) {
            details.insert(field.to_string(), value.clone());
        }
    }
    Some(details.into())
}

/// Call the provider's `create`/`revoke` and, when it succeeds, add `key_created` or
/// `key_revoked` to the event log with the caller's actor.
pub(crate) async fn call_and_record(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    capability: &str,
    body: Vec<u8>,
) -> ApiResult<HttpResponse> {
    let answer = dispatch_call(state, req, id, CallKind::Capability, capability, body).await?;
    if let (Answer::Complete(reply), Some(kind)) = (&answer, event_kind(capability)) {
        let ok = (200..300).contains(&reply.status);
        if let Some(details) = details(capability, &reply.body).filter(|_| ok) {
            let (store, plugin, actor) = (state.store.clone(), id.to_string(), actor(req));
            let written =
                blocking(move || store.add_event(Some(&plugin), kind, &actor, details)).await;
            if let Err(e) = written {
                tracing::warn!(plugin = id, kind, "cannot write event: {}", e.message);
            }
        }
    }
    Ok(respond(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_itself_is_never_in_the_details() {
        let created =
            br#"{"id":"0123abcd","name":"ci","scopes":["read"],"key":"bkg_0123abcd_secret",
            "prefix":"bkg_0123abcd_","expires_at_ms":null,"created_at_ms":1}"#;
        let d = details("create", created).unwrap();
        assert_eq!(d, serde_json::json!({"id":"0123abcd","name":"ci","scopes":["read"]}));
    }

    #[test]
    fn a_second_revocation_or_an_odd_answer_records_nothing() {
        let again = br#"{"id":"0123abcd","already_revoked":true,"revoked_at_ms":5}"#;
        assert_eq!(details("revoke", again), None);
        let first = br#"{"id":"0123abcd","name":"ci","scopes":["read"],"already_revoked":false,"revoked_at_ms":5}"#;
        assert_eq!(
            details("revoke", first),
            Some(
                serde_json::json!({"id":"0123abcd","name":"ci","scopes":["read"],"revoked_at_ms":5})
            )
        );
        assert_eq!(details("create", b"not json"), None);
        assert_eq!(details("create", br#"{"name":"no id"}"#), None);
    }
}
