//! The relying party against a real OpenID Provider (panva's oidc-provider, see
//! `tests/common/oidc.rs`), over real HTTP: every sign-in goes through the provider's own
//! login and consent pages, as a browser's would.
//!
//! Without the provider installed these tests warn and pass, except under CI (`CI` set), where
//! they fail: `.ci/install-oidc-provider` installs it.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::*;

#[allow(unreachable_pub, dead_code)]
#[path = "../../tests/common/oidc.rs"]
mod provider;

use provider::{
    Browser, Provider, CLIENT_ID, CLIENT_SECRET, POST_LOGOUT_REDIRECT_URI, REDIRECT_URI,
};

/// A provider with `config`, or `None` (with a warning) when it is not installed outside CI.
async fn start(config: Value) -> Option<Provider> {
    if !provider::available() {
        return None;
    }
    Some(Provider::start(&config).await)
}

fn rp_config(issuer: &str) -> Config {
    let mut config = Config::new(
        issuer,
        CLIENT_ID,
        ClientSecret::new(CLIENT_SECRET),
        REDIRECT_URI,
    );
    config.scopes = vec!["profile".into(), "email".into(), "groups".into()];
    config.timeout = Duration::from_secs(5);
    config
}

fn flow_key() -> FlowKey {
    FlowKey::new(b"the caller's cookie key")
}

async fn client(config: Config) -> Client {
    Client::discover(config, flow_key())
        .await
        .expect("discovery against the test provider")
}

/// The query string of the callback URL the provider redirected to.
fn query(callback: &str) -> &str {
    callback.split_once('?').map_or("", |(_, query)| query)
}

/// Starts a sign-in, signs in at the provider as `login`; returns the callback URL and the
/// flow cookie.
async fn authorize(client: &Client, provider: &Provider, login: &str) -> (String, String) {
    let sign_in = client.begin("/dash/?tab=2");
    let callback = Browser::default()
        .sign_in_at_provider(&provider.issuer, &sign_in.url, login)
        .await;
    assert!(callback.starts_with(REDIRECT_URI), "{callback}");
    (callback, sign_in.cookie)
}

async fn sign_in(client: &Client, provider: &Provider, login: &str) -> Result<SignedIn, OidcError> {
    let (callback, cookie) = authorize(client, provider, login).await;
    client.finish(query(&callback), [cookie.as_bytes()]).await
}

/// The claims of a compact JWT, unverified (to forge variants of a real token).
fn claims_of(token: &str) -> Map<String, Value> {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn jwt(header: &Value, claims: &Map<String, Value>, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test]
async fn discovery_reads_the_provider_and_checks_the_issuer() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    let metadata = client.provider();
    assert_eq!(metadata.issuer, provider.issuer);
    assert_eq!(
        metadata.end_session_endpoint.as_deref(),
        Some(format!("{}/session/end", provider.issuer).as_str())
    );
    assert!(metadata.userinfo_endpoint.is_some());
    assert_eq!(
        client.key_fetches(),
        1,
        "the key set is fetched at discovery"
    );
    assert!(
        !format!("{client:?}").contains(CLIENT_SECRET),
        "Debug hides the secret"
    );

    // The provider states its issuer without a trailing slash: one with it is another issuer.
    let error = Client::discover(rp_config(&format!("{}/", provider.issuer)), flow_key())
        .await
        .unwrap_err();
    assert!(matches!(error, OidcError::IssuerMismatch { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("names the issuer \"{}\"", provider.issuer))
            && message.contains(&format!("not the configured \"{}/\"", provider.issuer)),
        "{message}"
    );

    // A path that is no provider: 404 at the discovery URL, named.
    let error = Client::discover(rp_config(&format!("{}/nope", provider.issuer)), flow_key())
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "the identity provider answered 404 Not Found at {}/nope/.well-known/openid-configuration",
            provider.issuer
        )),
        "{error}"
    );
}

#[tokio::test]
async fn a_full_sign_in_yields_name_email_and_groups() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let mut config = rp_config(&provider.issuer);
    config.claims.extra = vec!["name".into(), "email_verified".into()];
    let client = client(config).await;
    let (callback, cookie) = authorize(&client, &provider, "ada").await;
    assert_eq!(
        provider::query_param(&callback, "iss").as_deref(),
        Some(provider.issuer.as_str()),
        "the provider adds iss (RFC 9207), and it is checked"
    );
    let signed_in = client
        .finish(query(&callback), [cookie.as_bytes()])
        .await
        .unwrap();
    let identity = &signed_in.identity;
    assert_eq!(identity.subject, "ada");
    assert_eq!(identity.name, "ada", "preferred_username comes first");
    assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    assert_eq!(identity.groups, ["analysts", "admins"]);
    assert_eq!(
        Value::Object(identity.claims.clone()),
        json!({"name": "Ada Lovelace", "email_verified": true})
    );
    assert_eq!(signed_in.next, "/dash/?tab=2");
    let now = jsonwebtoken::get_current_timestamp();
    assert!(signed_in.expires_at > now, "{}", signed_in.expires_at);
    // The provider keeps name, email and groups out of its ID tokens (conformIdTokenClaims):
    // they came from userinfo.
    let id_token_claims = claims_of(signed_in.id_token.as_str());
    assert!(
        !id_token_claims.contains_key("groups"),
        "{id_token_claims:?}"
    );

    // A user without email or groups.
    let bob = sign_in(&client, &provider, "bob").await.unwrap().identity;
    assert_eq!(
        (bob.name.as_str(), bob.email, bob.groups.len()),
        ("bob", None, 0)
    );
}

#[tokio::test]
async fn claims_come_from_the_id_token_when_userinfo_is_off() {
    let mut provider_config = provider::config();
    provider_config["claims_in_id_token"] = json!(true);
    let Some(provider) = start(provider_config).await else {
        return;
    };
    let mut config = rp_config(&provider.issuer);
    config.userinfo = false;
    let identity = sign_in(&client(config).await, &provider, "ada")
        .await
        .unwrap()
        .identity;
    assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    assert_eq!(identity.groups, ["analysts", "admins"]);

    // The same provider without the claims in its ID tokens, userinfo off: nothing to read.
    let Some(plain) = start(provider::config()).await else {
        return;
    };
    let mut config = rp_config(&plain.issuer);
    config.userinfo = false;
    let identity = sign_in(&client(config).await, &plain, "ada")
        .await
        .unwrap()
        .identity;
    assert_eq!((identity.email, identity.groups.len()), (None, 0));
}

#[tokio::test]
async fn tampered_state_or_flow_cookie_is_refused_before_the_code_is_used() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    let (callback, cookie) = authorize(&client, &provider, "ada").await;
    let query = query(&callback);
    let state = provider::query_param(&callback, "state").unwrap();

    let other_state = query.replace(&state, &URL_SAFE_NO_PAD.encode([7u8; 32]));
    let error = client
        .finish(&other_state, [cookie.as_bytes()])
        .await
        .unwrap_err();
    assert!(matches!(error, OidcError::StateMismatch), "{error}");

    let mut tampered = cookie.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let error = client
        .finish(query, [tampered.as_slice()])
        .await
        .unwrap_err();
    assert!(matches!(error, OidcError::NoFlow), "{error}");

    let error = client.finish(query, []).await.unwrap_err();
    assert!(matches!(error, OidcError::NoFlow), "{error}");
    assert!(error.to_string().contains("start again"), "{error}");

    // Another sign-in's cookie (this browser started two; the other one's state differs).
    let other = client.begin("/");
    let error = client
        .finish(query, [other.cookie.as_bytes()])
        .await
        .unwrap_err();
    assert!(matches!(error, OidcError::StateMismatch), "{error}");

    // A cookie signed with another key is not ours.
    let foreign = Client::discover(rp_config(&provider.issuer), FlowKey::new(b"other"))
        .await
        .unwrap();
    let foreign_cookie = foreign.begin("/").cookie;
    let error = client
        .finish(query, [foreign_cookie.as_bytes()])
        .await
        .unwrap_err();
    assert!(matches!(error, OidcError::NoFlow), "{error}");

    // None of that spent the code: with the right cookie among others, the sign-in works.
    let signed_in = client
        .finish(
            query,
            [
                tampered.as_slice(),
                other.cookie.as_bytes(),
                cookie.as_bytes(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(signed_in.identity.name, "ada");
}

#[tokio::test]
async fn a_replayed_code_is_refused_with_a_clear_error() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    let (callback, cookie) = authorize(&client, &provider, "ada").await;
    client
        .finish(query(&callback), [cookie.as_bytes()])
        .await
        .unwrap();
    let error = client
        .finish(query(&callback), [cookie.as_bytes()])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OidcError::TokenRefused { error, .. } if error == "invalid_grant"),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("already used"), "{message}");
    let code = provider::query_param(&callback, "code").unwrap();
    for secret in [code.as_str(), CLIENT_SECRET, cookie.as_str()] {
        assert!(!message.contains(secret), "{message}");
        assert!(!format!("{error:?}").contains(secret), "{error:?}");
    }
}

#[tokio::test]
async fn id_tokens_with_wrong_claims_are_refused() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    let now = jsonwebtoken::get_current_timestamp();
    let cases = [
        (json!({"nonce": "not-this-sign-ins"}), IdTokenError::Nonce),
        (
            json!({"aud": "other-client"}),
            IdTokenError::Audience("other-client".into()),
        ),
        (
            json!({"aud": ["marimo", "other-client"]}),
            IdTokenError::AuthorizedParty("absent".into()),
        ),
        (
            json!({"azp": "other-client"}),
            IdTokenError::AuthorizedParty("other-client".into()),
        ),
        (json!({"exp": now - 120}), IdTokenError::Expired),
        (json!({"iat": now + 3600}), IdTokenError::NotYetValid),
        (
            json!({"iss": "https://evil.example"}),
            IdTokenError::Issuer("https://evil.example".into()),
        ),
    ];
    for (claims, expected) in cases {
        provider.override_next_id_token(claims.clone()).await;
        let error = sign_in(&client, &provider, "ada").await.unwrap_err();
        match &error {
            OidcError::IdToken(found) => assert_eq!(found, &expected, "{claims}"),
            other => panic!("{claims}: {other}"),
        }
        if let IdTokenError::Audience(_) = expected {
            assert_eq!(
                error.to_string(),
                "the ID token is for another client (aud=other-client)"
            );
        }
    }
    // Within the leeway is fine, and the override is spent after one token.
    provider
        .override_next_id_token(json!({"exp": now - 5}))
        .await;
    assert!(sign_in(&client, &provider, "ada").await.is_ok());
    assert!(sign_in(&client, &provider, "ada").await.is_ok());
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    let genuine = sign_in(&client, &provider, "ada").await.unwrap().id_token;
    let claims = claims_of(genuine.as_str());
    let nonce = claims["nonce"].as_str().unwrap().to_owned();
    // The genuine token verifies: what fails below fails for its algorithm.
    client
        .verify_id_token(genuine.as_str(), &nonce)
        .await
        .unwrap();

    let jwks = provider.jwks().await;
    let jwk = &jwks["keys"][0];
    let kid = jwk["kid"].as_str().unwrap();
    // HS256 "signed" with the public key, in the two forms an attacker would try.
    let modulus = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    for public_bytes in [modulus, jwk.to_string().into_bytes()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&public_bytes),
        )
        .unwrap();
        let error = client.verify_id_token(&forged, &nonce).await.unwrap_err();
        assert!(
            matches!(&error, OidcError::IdToken(IdTokenError::Algorithm { alg, .. }) if alg == "HS256"),
            "{error}"
        );
    }
    for alg in ["none", "None", "NONE"] {
        let forged = jwt(&json!({"alg": alg, "kid": kid}), &claims, b"");
        let error = client.verify_id_token(&forged, &nonce).await.unwrap_err();
        assert!(
            matches!(&error, OidcError::IdToken(IdTokenError::Algorithm { alg: found, .. }) if found == alg),
            "{error}"
        );
    }
    // The genuine signature under a changed payload.
    let mut raised = claims.clone();
    raised["sub"] = json!("admin");
    let signature = genuine.as_str().rsplit('.').next().unwrap();
    let forged = jwt(
        &json!({"alg": "RS256", "kid": kid}),
        &raised,
        &URL_SAFE_NO_PAD.decode(signature).unwrap(),
    );
    let error = client.verify_id_token(&forged, &nonce).await.unwrap_err();
    assert!(
        matches!(error, OidcError::IdToken(IdTokenError::Signature)),
        "{error}"
    );
    assert_eq!(client.key_fetches(), 1, "none of this refetched keys");
}

#[tokio::test]
async fn a_rotated_key_costs_one_refetch_and_unknown_kids_no_more() {
    let Some(mut provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    sign_in(&client, &provider, "ada").await.unwrap();
    assert_eq!(client.key_fetches(), 1);

    provider.restart_with_key("key-2").await;
    let signed_in = sign_in(&client, &provider, "ada").await.unwrap();
    assert_eq!(
        client.key_fetches(),
        2,
        "the new kid was fetched once, on demand"
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed_in.id_token.as_str().split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], "key-2");
    sign_in(&client, &provider, "ada").await.unwrap();
    assert_eq!(client.key_fetches(), 2, "the new key is cached");

    // Tokens naming keys nobody has: within the interval since the last refetch, none.
    let claims = claims_of(signed_in.id_token.as_str());
    for kid in ["made-up-1", "made-up-2", "made-up-3"] {
        let forged = jwt(&json!({"alg": "RS256", "kid": kid}), &claims, b"sig");
        let error = client.verify_id_token(&forged, "n").await.unwrap_err();
        assert!(
            matches!(&error, OidcError::IdToken(IdTokenError::UnknownKey { kid: Some(k), .. }) if k == kid),
            "{error}"
        );
    }
    assert_eq!(client.key_fetches(), 2, "no refetch within the interval");
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval_even_concurrently() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let mut config = rp_config(&provider.issuer);
    config.jwks_refetch_interval = Duration::from_millis(800);
    let client = client(config).await;
    let claims = claims_of(
        sign_in(&client, &provider, "ada")
            .await
            .unwrap()
            .id_token
            .as_str(),
    );
    let forged = |kid: &str| jwt(&json!({"alg": "RS256", "kid": kid}), &claims, b"sig");

    let tokens: Vec<String> = (0..8).map(|i| forged(&format!("unknown-{i}"))).collect();
    let results =
        futures_util::future::join_all(tokens.iter().map(|t| client.verify_id_token(t, "n"))).await;
    assert!(results.iter().all(Result::is_err));
    assert_eq!(
        client.key_fetches(),
        2,
        "eight unknown kids at once: one refetch"
    );

    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(client.verify_id_token(&forged("later"), "n").await.is_err());
    assert_eq!(client.key_fetches(), 3, "after the interval, one more");
}

#[tokio::test]
async fn the_provider_being_down_is_a_clear_error_and_no_hang() {
    let Some(mut provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    let (callback, cookie) = authorize(&client, &provider, "ada").await;
    provider.stop().await;

    // Down after discovery: the code exchange says so.
    let started = Instant::now();
    let error = client
        .finish(query(&callback), [cookie.as_bytes()])
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "the identity provider at {}/token is not reachable: ",
            provider.issuer
        )),
        "{error}"
    );
    assert!(error.to_string().contains("Connection refused"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Down at discovery.
    let error = Client::discover(rp_config(&provider.issuer), flow_key())
        .await
        .unwrap_err();
    assert!(matches!(error, OidcError::Unreachable { .. }), "{error}");

    // Up but silent (accepts, never answers): bounded by the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let mut config = rp_config(&issuer);
    config.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = Client::discover(config, flow_key()).await.unwrap_err();
    assert!(
        matches!(&error, OidcError::Timeout { timeout, .. } if *timeout == Duration::from_millis(500)),
        "{error}"
    );
    assert!(
        error.to_string().contains("did not answer within 500ms"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

#[tokio::test]
async fn client_secret_post_when_the_provider_only_takes_that() {
    let mut provider_config = provider::config();
    provider_config["token_endpoint_auth_methods"] = json!(["client_secret_post"]);
    provider_config["clients"][0]["token_endpoint_auth_method"] = json!("client_secret_post");
    let Some(provider) = start(provider_config).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    let identity = sign_in(&client, &provider, "ada").await.unwrap().identity;
    assert_eq!(identity.name, "ada");
}

#[tokio::test]
async fn a_wrong_client_secret_is_reported_without_the_secret() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let mut config = rp_config(&provider.issuer);
    config.client_secret = ClientSecret::new("wrong-secret-value");
    let client = client(config).await;
    let error = sign_in(&client, &provider, "ada").await.unwrap_err();
    assert!(
        matches!(&error, OidcError::TokenRefused { error, .. } if error == "invalid_client"),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("check the client id and secret"),
        "{message}"
    );
    assert!(!message.contains("wrong-secret-value"), "{message}");
}

#[tokio::test]
async fn a_declined_sign_in_reports_the_providers_error() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    let sign_in = client.begin("/");
    let mut browser = Browser::default();
    let login = browser.get(&sign_in.url).await.location.unwrap();
    let page = browser.get(&login).await;
    // The login page's "[ Cancel ]" link.
    let abort = page
        .body
        .split("href=\"")
        .map(|rest| rest.split('"').next().unwrap())
        .find(|href| href.ends_with("/abort"))
        .expect("the login page links to abort")
        .to_owned();
    let mut url = abort;
    let callback = loop {
        let location = browser.get(&url).await.location.unwrap();
        if !location.starts_with(&provider.issuer) {
            break location;
        }
        url = location;
    };
    let error = client
        .finish(query(&callback), [sign_in.cookie.as_bytes()])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OidcError::Refused { error, .. } if error == "access_denied"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("the identity provider refused the sign-in: access_denied"),
        "{error}"
    );
}

#[tokio::test]
async fn the_logout_url_ends_the_session_at_the_provider() {
    let Some(provider) = start(provider::config()).await else {
        return;
    };
    let client = client(rp_config(&provider.issuer)).await;
    // One browser throughout: it holds the provider's session.
    let mut browser = Browser::default();
    let sign_in_flow = client.begin("/");
    let callback = browser
        .sign_in_at_provider(&provider.issuer, &sign_in_flow.url, "ada")
        .await;
    let signed_in = client
        .finish(query(&callback), [sign_in_flow.cookie.as_bytes()])
        .await
        .unwrap();

    let url = client
        .logout_url(
            Some(&signed_in.id_token),
            Some(POST_LOGOUT_REDIRECT_URI),
            Some("after-logout"),
        )
        .unwrap();
    assert!(
        url.starts_with(&format!("{}/session/end?id_token_hint=", provider.issuer)),
        "{url}"
    );
    assert_eq!(
        provider::query_param(&url, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(
        client.logout_url(None, None, None).unwrap(),
        format!("{}/session/end?client_id={CLIENT_ID}", provider.issuer)
    );
    // The provider asks the browser to confirm (a form with its own xsrf token).
    let page = browser.get(&url).await;
    assert_eq!(page.status, ::http::StatusCode::OK, "{}", page.body);
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let at = page.body.find(&marker).unwrap() + marker.len();
        page.body[at..].split('"').next().unwrap().to_owned()
    };
    let action = page
        .body
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let confirmed = browser
        .post_form(&action, &[("xsrf", &field("xsrf")), ("logout", "yes")])
        .await;
    let back = confirmed.location.expect("the provider redirects back");
    assert!(back.starts_with(POST_LOGOUT_REDIRECT_URI), "{back}");
    assert_eq!(
        provider::query_param(&back, "state").as_deref(),
        Some("after-logout")
    );

    // The provider's session is gone: a new sign-in in this browser asks for the login again.
    let again = client.begin("/");
    let login = browser.get(&again.url).await.location.unwrap();
    let page = browser.get(&login).await;
    assert!(
        page.body.contains("name=\"prompt\" value=\"login\""),
        "{}",
        page.body
    );
}
