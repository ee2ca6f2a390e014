//! `POST /apis/authentication.k8s.io/v1/tokenreviews`: the TokenReview API, answered the way
//! kube-apiserver answers it for bearer tokens (ServiceAccount tokens included), from tokens a test
//! registers with [`crate::ApiServer::add_token`].
//!
//! Semantics copied from Kubernetes:
//! - The answer is the `TokenReview` sent (its `spec` echoed), with `status` filled in, HTTP 201.
//! - A token is valid only if known, not revoked and not expired; otherwise `status.authenticated`
//!   is absent (false), `status.user` is empty and `status.error` says why.
//! - Audiences: a token carries the audiences it was issued for. If `spec.audiences` is given, the
//!   token is valid only if the two intersect; if it is empty, the API server's own audiences
//!   ([`API_SERVER_AUDIENCES`]) are used instead. `status.audiences` is the intersection.
//! - A ServiceAccount user (`system:serviceaccount:NS:NAME`) gets the groups `system:serviceaccounts`,
//!   `system:serviceaccounts:NS` and `system:authenticated`; any other user `system:authenticated`.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::util::ApiError;

/// The audiences kube-apiserver accepts when a TokenReview names none (its `--api-audiences`,
/// whose default is the issuer, here the usual in-cluster one).
pub const API_SERVER_AUDIENCES: &[&str] = &["https://kubernetes.default.svc.cluster.local"];

/// One registered token.
#[derive(Clone, Debug)]
pub struct TokenEntry {
    pub username: String,
    pub uid: String,
    pub audiences: Vec<String>,
    pub expires_at: SystemTime,
}

/// How the TokenReview endpoint misbehaves, when a test asks it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenReviewFault {
    /// Every TokenReview is answered with this HTTP code and a Status body.
    Status(u16),
    /// Every TokenReview is read and then never answered (the connection stays open).
    Frozen,
}

/// The registered tokens and what the endpoint has seen.
#[derive(Debug, Default)]
pub struct TokenReviews {
    tokens: HashMap<String, TokenEntry>,
    uids: u64,
    /// TokenReviews received (every POST, answered or not).
    pub received: u64,
    pub fault: Option<TokenReviewFault>,
}

fn groups_of(username: &str) -> Vec<String> {
    let mut groups = Vec::new();
    if let Some(rest) = username.strip_prefix("system:serviceaccount:") {
        groups.push("system:serviceaccounts".to_string());
        if let Some((ns, _)) = rest.split_once(':') {
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
    }
    groups.push("system:authenticated".to_string());
    groups
}

impl TokenReviews {
    pub fn add(&mut self, token: &str, username: &str, audiences: &[&str], expires_at: SystemTime) {
        self.uids += 1;
        self.tokens.insert(
            token.to_string(),
            TokenEntry {
                username: username.to_string(),
                uid: format!("70ce7000-0000-4000-8000-{:012x}", self.uids),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expires_at,
            },
        );
    }

    /// Forgets a token (as if its ServiceAccount or Pod was deleted); `false` if it was unknown.
    pub fn revoke(&mut self, token: &str) -> bool {
        self.tokens.remove(token).is_some()
    }

    /// Sets a token's expiry; `false` if it is unknown.
    pub fn set_expiry(&mut self, token: &str, expires_at: SystemTime) -> bool {
        match self.tokens.get_mut(token) {
            Some(entry) => {
                entry.expires_at = expires_at;
                true
            }
            None => false,
        }
    }

    /// Answers one TokenReview body (the fault, if any, is the caller's business).
    pub fn review(&self, body: &Value) -> Result<Value, ApiError> {
        if body["kind"] != "TokenReview" || body["apiVersion"] != "authentication.k8s.io/v1" {
            return Err(ApiError::bad_request(format!(
                "expected a TokenReview of authentication.k8s.io/v1, got kind {} apiVersion {}",
                body["kind"], body["apiVersion"]
            )));
        }
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let token = spec["token"].as_str().unwrap_or_default();
        if token.is_empty() {
            // kube-apiserver's validation: spec.token is required.
            return Err(ApiError::new(
                422,
                "Invalid",
                "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value: token must not be empty",
            ));
        }
        let requested: Vec<String> = match spec["audiences"].as_array() {
            Some(list) if !list.is_empty() => list
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => API_SERVER_AUDIENCES.iter().map(|a| a.to_string()).collect(),
        };
        let status = match self.tokens.get(token) {
            None => {
                json!({"user": {}, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]"})
            }
            Some(entry) if entry.expires_at <= SystemTime::now() => json!({
                "user": {},
                "error": "[invalid bearer token, service account token has expired]",
            }),
            Some(entry) => {
                let common: Vec<&String> = requested
                    .iter()
                    .filter(|a| entry.audiences.contains(a))
                    .collect();
                if common.is_empty() {
                    json!({
                        "user": {},
                        "error": format!(
                            "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                            entry.audiences, requested
                        ),
                    })
                } else {
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": entry.username,
                            "uid": entry.uid,
                            "groups": groups_of(&entry.username),
                        },
                        "audiences": common,
                    })
                }
            }
        };
        let mut metadata = body.get("metadata").cloned().unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            metadata = json!({});
        }
        metadata["creationTimestamp"] = Value::Null;
        Ok(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": metadata,
            "spec": spec,
            "status": status,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn review(token: &str, audiences: &[&str]) -> Value {
        json!({
            "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
            "spec": {"token": token, "audiences": audiences},
        })
    }

    #[test]
    fn audiences_intersect_expired_and_unknown_tokens_are_refused() {
        let mut reviews = TokenReviews::default();
        let later = SystemTime::now() + Duration::from_secs(3600);
        reviews.add(
            "t1",
            "system:serviceaccount:bank:ledger",
            &["a", "b"],
            later,
        );
        let ok = reviews.review(&review("t1", &["b", "c"])).unwrap();
        assert_eq!(ok["status"]["authenticated"], true);
        assert_eq!(ok["status"]["audiences"], json!(["b"]));
        assert_eq!(
            ok["status"]["user"]["groups"],
            json!([
                "system:serviceaccounts",
                "system:serviceaccounts:bank",
                "system:authenticated"
            ])
        );
        let other = reviews.review(&review("t1", &["c"])).unwrap();
        assert!(other["status"].get("authenticated").is_none());
        assert!(other["status"]["error"]
            .as_str()
            .unwrap()
            .contains("audiences"));
        // No audiences asked for: the API server's own, which t1 was not issued for.
        let default = reviews.review(&review("t1", &[])).unwrap();
        assert!(default["status"].get("authenticated").is_none());
        reviews.set_expiry("t1", SystemTime::now() - Duration::from_secs(1));
        let expired = reviews.review(&review("t1", &["a"])).unwrap();
        assert!(expired["status"]["error"]
            .as_str()
            .unwrap()
            .contains("expired"));
        assert!(reviews.revoke("t1"));
        let unknown = reviews.review(&review("t1", &["a"])).unwrap();
        assert!(unknown["status"]["error"]
            .as_str()
            .unwrap()
            .contains("invalid bearer token"));
        assert_eq!(
            reviews.review(&review("", &[])).unwrap_err().code,
            422,
            "an empty token is invalid input"
        );
    }
}
