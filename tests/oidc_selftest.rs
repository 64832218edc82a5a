//! Proves the test OpenID provider harness (tests/common/oidc.rs) on its own, without the
//! gateway: the provider starts and answers discovery, stops by PID, rotates its key by a
//! restart on the same port, and its login and consent pages can be driven over raw HTTP to
//! a code. The relying party's own tests against it are in `src/oidc/tests.rs`.
//!
//! Without the provider installed the tests warn and pass, except under CI (`CI` set), where
//! they fail: run `.ci/install-oidc-provider` first.

mod common;
#[allow(dead_code, unreachable_pub)]
#[path = "common/oidc.rs"]
mod oidc;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use oidc::{Browser, Provider};

async fn start() -> Option<Provider> {
    oidc::available().then_some(())?;
    Some(Provider::start(&oidc::config()).await)
}

async fn json(browser: &mut Browser, url: &str) -> serde_json::Value {
    let page = browser.get(url).await;
    assert_eq!(page.status, http::StatusCode::OK, "{url}: {}", page.body);
    serde_json::from_str(&page.body).unwrap()
}

#[tokio::test]
async fn the_provider_answers_discovery_and_stops_by_pid() {
    let Some(mut provider) = start().await else {
        return;
    };
    let mut browser = Browser::default();
    let discovery = json(
        &mut browser,
        &format!("{}/.well-known/openid-configuration", provider.issuer),
    )
    .await;
    assert_eq!(discovery["issuer"], provider.issuer.as_str());
    assert_eq!(
        discovery["end_session_endpoint"],
        format!("{}/session/end", provider.issuer)
    );
    let pid = provider.pid().unwrap();
    assert!(common::process_alive(pid));
    provider.stop().await;
    assert!(common::wait_gone(pid, Duration::from_secs(5)).await);
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", provider.port)).await;
    assert!(refused.is_err(), "nothing listens after stop");
}

#[tokio::test]
async fn a_restart_on_the_same_port_rotates_the_signing_key() {
    let Some(mut provider) = start().await else {
        return;
    };
    let (issuer, port) = (provider.issuer.clone(), provider.port);
    let mut browser = Browser::default();
    let jwks = json(&mut browser, &format!("{issuer}/jwks")).await;
    assert_eq!(jwks["keys"][0]["kid"], "key-1");
    let old_n = jwks["keys"][0]["n"].clone();

    provider.restart_with_key("key-2").await;
    assert_eq!(
        (provider.issuer.as_str(), provider.port),
        (issuer.as_str(), port)
    );
    let jwks = json(&mut browser, &format!("{issuer}/jwks")).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], "key-2");
    assert_ne!(jwks["keys"][0]["n"], old_n, "a new key, not a renamed one");
}

#[tokio::test]
async fn the_login_and_consent_pages_lead_to_a_code() {
    let Some(provider) = start().await else {
        return;
    };
    let verifier = URL_SAFE_NO_PAD.encode([42u8; 32]);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", oidc::CLIENT_ID)
        .append_pair("redirect_uri", oidc::REDIRECT_URI)
        .append_pair("scope", "openid email")
        .append_pair("state", "the-state")
        .append_pair("nonce", "the-nonce")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let callback = Browser::default()
        .sign_in_at_provider(
            &provider.issuer,
            &format!("{}/auth?{query}", provider.issuer),
            "ada",
        )
        .await;
    assert!(callback.starts_with(oidc::REDIRECT_URI), "{callback}");
    assert_eq!(
        oidc::query_param(&callback, "state").as_deref(),
        Some("the-state")
    );
    assert!(oidc::query_param(&callback, "code").is_some_and(|code| !code.is_empty()));
}
