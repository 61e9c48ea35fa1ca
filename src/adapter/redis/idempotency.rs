//! Idempotency keys in Redis, so a repeat reaching any node finds the claim
//! or answer of the first request.
//!
//! One STRING per key ([`super::keys::Keys::idempotency`]): `p<token>` while
//! the claiming request publishes, then `a<answer JSON>`; it expires with the
//! window, counted from the claim. The claim is `SET NX PX`, so of two
//! requests at once on any nodes exactly one wins; storing and releasing
//! check the token first (a claim that expired and was taken again is not
//! touched).
//!
//! Redis unreachable: the node's own table decides ([`claim_key_locally`]),
//! so publishing goes on (fail open); a repeat reaching another node
//! meanwhile may be delivered again. Each such claim is reported
//! ([`KeyClaim::fell_back`]) and counted.

use super::RedisAdapter;
use crate::adapter::local::claim_key_locally;
use crate::adapter::KeyClaim;
use crate::hub::idempotency::{Answer, Claim, ClaimToken};
use redis::Script;
use std::time::Duration;

/// The value of a pending claim.
fn pending(token: ClaimToken) -> String {
    format!("p{token}")
}

/// Claims KEYS[1] with ARGV[1] for ARGV[2] ms; returns '' when claimed,
/// else the current value.
pub fn claim_script() -> Script {
    Script::new(
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return '' end
return redis.call('GET', KEYS[1]) or ''
"#,
    )
}

/// Replaces the pending claim ARGV[1] of KEYS[1] with ARGV[2], keeping its
/// expiry; 1 if it did.
pub fn store_script() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
return 1
"#,
    )
}

/// Deletes KEYS[1] if it is still the pending claim ARGV[1]; 1 if it did.
pub fn release_script() -> Script {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
}

/// What a stored value means for a new claim.
fn claim_of(value: &str, token: ClaimToken) -> Claim {
    match value.strip_prefix('a') {
        Some(answer) => Claim::Repeat(answer.into()),
        // Taken between SET and GET cannot happen (one script); an empty
        // value is a fresh claim.
        None if value.is_empty() => Claim::Claimed(token),
        None => Claim::InFlight,
    }
}

impl RedisAdapter {
    /// See [`crate::adapter::Adapter::claim_idempotency_key`].
    pub(super) async fn claim_key(
        &self,
        app_id: &str,
        key: &str,
        token: ClaimToken,
        window: Duration,
    ) -> KeyClaim {
        let mut invocation = self.scripts.idempotency_claim.prepare_invoke();
        invocation
            .key(self.keys.idempotency(app_id, key))
            .arg(pending(token))
            .arg(window.as_millis().max(1) as u64);
        let found = self
            .run(|mut connection| async move {
                invocation.invoke_async::<String>(&mut connection).await
            })
            .await;
        match found {
            Some(value) => KeyClaim {
                claim: claim_of(&value, token),
                evicted: 0,
                fell_back: false,
            },
            None => KeyClaim {
                fell_back: true,
                ..claim_key_locally(&self.node, app_id, key, token, window)
            },
        }
    }

    /// See [`crate::adapter::Adapter::store_idempotent_answer`]; the claim
    /// may be in Redis or, after a fallback, in this node's table.
    pub(super) async fn store_answer(
        &self,
        app_id: &str,
        key: &str,
        token: ClaimToken,
        answer: &Answer,
    ) {
        if let Some(state) = self.node.app(app_id) {
            state.idempotency.store(key, token, answer.clone());
        }
        let mut invocation = self.scripts.idempotency_store.prepare_invoke();
        invocation
            .key(self.keys.idempotency(app_id, key))
            .arg(pending(token))
            .arg(format!("a{answer}"));
        self.run(
            |mut connection| async move { invocation.invoke_async::<i64>(&mut connection).await },
        )
        .await;
    }

    /// See [`crate::adapter::Adapter::release_idempotency_key`].
    pub(super) async fn release_key(&self, app_id: &str, key: &str, token: ClaimToken) {
        if let Some(state) = self.node.app(app_id) {
            state.idempotency.release(key, token);
        }
        let mut invocation = self.scripts.idempotency_release.prepare_invoke();
        invocation
            .key(self.keys.idempotency(app_id, key))
            .arg(pending(token));
        self.run(
            |mut connection| async move { invocation.invoke_async::<i64>(&mut connection).await },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_read_as_claims() {
        assert_eq!(claim_of("", 7), Claim::Claimed(7));
        assert_eq!(claim_of("p3", 7), Claim::InFlight);
        assert_eq!(claim_of("a{}", 7), Claim::Repeat("{}".into()));
    }
}
