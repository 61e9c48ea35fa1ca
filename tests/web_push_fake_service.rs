//! The Web Push sender end to end against the fake push service of
//! protocol-tests/python/fake_push_service.py, which checks the VAPID JWT
//! and decrypts each message with the subscription's private key (written
//! from the RFCs in Python, checked there against pywebpush).
//!
//! Needs a Python with `cryptography`: protocol-tests/.venv (made by
//! protocol-tests/run, which makes it before `cargo test` and sets
//! `RUSHER_REQUIRE_PYTHON` so the test fails rather than skips) or the
//! system `python3`; without one, a plain `cargo test` says so and passes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rusher::notify::ece::MAX_PLAINTEXT_LEN;
use rusher::notify::vapid::Vapid;
use rusher::notify::web_push::{send, SendOutcome, Urgency, WebPushSubscription};
use serde_json::{json, Value};

const VAPID_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";

/// The fake service's process, killed when the test ends however it ends.
struct FakeService {
    child: Child,
    origin: String,
}

impl Drop for FakeService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("protocol-tests/.venv/bin/python");
    [venv, PathBuf::from("python3")].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import cryptography"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn start_fake_service() -> Option<FakeService> {
    let Some(python) = python() else {
        // protocol-tests/run makes the venv first and sets this: there the
        // test must run, never pass by skipping.
        assert!(
            std::env::var_os("RUSHER_REQUIRE_PYTHON").is_none(),
            "no Python with `cryptography`, and RUSHER_REQUIRE_PYTHON is set"
        );
        eprintln!("SKIPPED: no Python with `cryptography` (run protocol-tests/run once to make protocol-tests/.venv)");
        return None;
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/python/fake_push_service.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fake push service");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("the fake push service's first line");
    let ready: Value = serde_json::from_str(&line).expect("{\"origin\": ...}");
    let origin = ready["origin"].as_str().expect("origin").to_string();
    Some(FakeService { child, origin })
}

async fn control(client: &reqwest::Client, url: String, body: Option<Value>) -> Value {
    let request = match body {
        Some(body) => client.post(url).body(body.to_string()),
        None => client.get(url),
    };
    let text = request.send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_against_the_fake_push_service() {
    let Some(service) = start_fake_service() else {
        return;
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let origin = &service.origin;
    let info = control(
        &client,
        format!("{origin}/control/subscriptions"),
        Some(json!({})),
    )
    .await;
    let id = info["id"].as_str().unwrap().to_string();
    let sub: WebPushSubscription = serde_json::from_value(info).unwrap();
    let vapid = Vapid::new(VAPID_PRIVATE, "mailto:ops@example.com").unwrap();
    let state_url = format!("{origin}/control/subscriptions/{id}");

    // Delivered, decrypted, with the headers asked for.
    let payload = br#"{"channel":"news","event":"flash","data":"{\"n\":1}"}"#;
    let outcome = send(&client, &vapid, &sub, payload, 120, Some(Urgency::High)).await;
    assert_eq!(outcome, SendOutcome::Delivered);
    // The largest payload fits the 4096-byte body the service accepts, and
    // a second message to the origin reuses the cached JWT.
    let big = vec![b'a'; MAX_PLAINTEXT_LEN];
    assert_eq!(
        send(&client, &vapid, &sub, &big, 0, None).await,
        SendOutcome::Delivered
    );
    let state = control(&client, state_url.clone(), None).await;
    assert_eq!(state["rejected"], json!([]), "{state}");
    let messages = state["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0]["plaintext"].as_str().unwrap().as_bytes(),
        payload
    );
    assert_eq!(messages[0]["ttl"], "120");
    assert_eq!(messages[0]["urgency"], "high");
    assert_eq!(messages[0]["k"], vapid.public_key());
    assert_eq!(messages[0]["sub"], "mailto:ops@example.com");
    assert_eq!(
        messages[1]["plaintext"].as_str().unwrap().len(),
        MAX_PLAINTEXT_LEN
    );
    assert_eq!(messages[1]["ttl"], "0");
    assert_eq!(messages[1]["urgency"], Value::Null);
    assert_eq!(messages[0]["exp"], messages[1]["exp"], "one JWT per origin");

    // The push service's answers become outcomes.
    control(
        &client,
        format!("{state_url}/answers"),
        Some(json!({"statuses": [500, 429, 400, 410], "retry_after": "7"})),
    )
    .await;
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(send(&client, &vapid, &sub, b"x", 60, None).await);
    }
    assert!(
        matches!(&outcomes[0], SendOutcome::Retry { after: None, .. }),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[1],
        SendOutcome::Retry {
            reason: "push service answered 429".into(),
            after: Some(Duration::from_secs(7)),
        }
    );
    assert!(
        matches!(&outcomes[2], SendOutcome::Failed(_)),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[3], SendOutcome::Gone);

    // Another app's key: the service checks the signature against k=, so
    // this proves the JWT and k= belong together (not just any JWT passes).
    let other = Vapid::new(&random_key(), "https://example.com/contact").unwrap();
    assert_eq!(
        send(&client, &other, &sub, b"y", 60, None).await,
        SendOutcome::Delivered
    );
    let state = control(&client, state_url, None).await;
    let last = state["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["k"], other.public_key());
    assert_eq!(last["sub"], "https://example.com/contact");
}

fn random_key() -> String {
    use base64::Engine as _;
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.to_bytes())
}
