//! The failed-login limiter over real TCP: brute force from one address is cut off after the
//! burst without the password being checked, while other addresses and signed-in browsers
//! are not slowed. Clients bind to distinct loopback addresses (127.0.0.0/8 is all local).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{counter, raw, TestServer};
use marimo_rs::{create_app, AuthLayer, MarimoService, Token};

const TOKEN: &str = "sup3rs3cr3t";
const BURST: u32 = 20;
/// A full refill takes a minute: one attempt every 3 s.
const PER: Duration = Duration::from_secs(60);

fn local(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// `ok` at the root, counting requests, behind auth with `layer`.
fn app(layer: AuthLayer, hits: Arc<AtomicUsize>) -> MarimoService {
    create_app()
        .with_service("", counter(hits))
        .auth(layer)
        // The requests name the gateway `gw`; bound to loopback, it answers that name only
        // when allowed (DNS rebinding guard).
        .allowed_hosts(["gw"])
        .build()
        .unwrap()
}

fn basic_request(password: &str) -> Vec<u8> {
    let credentials = STANDARD.encode(format!("attacker:{password}"));
    format!("GET /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic {credentials}\r\n\r\n")
        .into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The session cookie from an `access_token` page load (`name=value`).
async fn sign_in(server: &TestServer, from: IpAddr) -> String {
    let mut client = raw::KeepAlive::new(raw::connect_from(from, server.addr).await);
    let reply = client
        .send(
            format!("GET /?access_token={TOKEN} HTTP/1.1\r\nHost: gw\r\nAccept: text/html\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 303);
    reply
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_limited_while_other_users_are_unaffected() {
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = AuthLayer::new(Token::new(TOKEN)).login_limit(BURST, PER);
    let server = TestServer::start(app(layer, hits.clone())).await;
    let addr = server.addr;
    // A browser on the attacker's own address signed in before the attack.
    let cookie = sign_in(&server, local(1)).await;

    const ATTEMPTS: usize = 10_000;
    const TASKS: usize = 8;
    let attack_over = Arc::new(AtomicBool::new(false));

    // A legitimate API client on 127.0.0.2 with the right password, all through the attack.
    let valid = {
        let attack_over = attack_over.clone();
        tokio::spawn(async move {
            let mut client = raw::KeepAlive::new(raw::connect_from(local(2), addr).await);
            let request = basic_request(TOKEN);
            let mut latencies = Vec::new();
            let mut statuses = Vec::new();
            while !attack_over.load(Ordering::Relaxed) || latencies.len() < 100 {
                let start = Instant::now();
                let reply = client.send(&request).await.expect("valid user's request");
                latencies.push(start.elapsed());
                statuses.push(reply.status);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (latencies, statuses)
        })
    };
    // The signed-in browser on 127.0.0.1, the attacked address, also all through the attack.
    let browser = {
        let attack_over = attack_over.clone();
        tokio::spawn(async move {
            let mut client = raw::KeepAlive::new(raw::connect_from(local(1), addr).await);
            let request = format!("GET /api/x HTTP/1.1\r\nHost: gw\r\nCookie: {cookie}\r\n\r\n");
            let mut statuses = Vec::new();
            while !attack_over.load(Ordering::Relaxed) || statuses.len() < 100 {
                let reply = client
                    .send(request.as_bytes())
                    .await
                    .expect("browser request");
                statuses.push(reply.status);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            statuses
        })
    };

    // The attack: 10,000 wrong passwords from 127.0.0.1 over 8 keep-alive connections.
    let start = Instant::now();
    let attackers: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(async move {
                let mut client = raw::KeepAlive::new(raw::connect_from(local(1), addr).await);
                let mut counts = (0usize, 0usize, Vec::new());
                for i in 0..ATTEMPTS / TASKS {
                    let reply = client
                        .send(&basic_request(&format!("guess-{task}-{i}")))
                        .await
                        .expect("attacker's request");
                    match reply.status {
                        401 => counts.0 += 1,
                        429 => {
                            counts.1 += 1;
                            let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
                            counts.2.push(retry);
                        }
                        other => panic!("attacker got {other}"),
                    }
                }
                counts
            })
        })
        .collect();
    let (mut unauthorized, mut limited, mut retry_after) = (0, 0, Vec::new());
    for attacker in attackers {
        let (u, l, r) = attacker.await.unwrap();
        unauthorized += u;
        limited += l;
        retry_after.extend(r);
    }
    let attack = start.elapsed();
    attack_over.store(true, Ordering::Relaxed);
    let (mut latencies, valid_statuses) = valid.await.unwrap();
    let browser_statuses = browser.await.unwrap();

    // Afterwards the right password from the attacked address is refused unchecked too; the
    // cookie still works.
    let mut late = raw::KeepAlive::new(raw::connect_from(local(1), addr).await);
    let refused = late.send(&basic_request(TOKEN)).await.unwrap();
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());

    // Every 401 is a password that was checked; a 429 was answered without checking. Only the
    // burst, plus what refilled during the attack (one every 3 s), may have been checked.
    let refilled = (attack.as_secs_f64() / 3.0).ceil() as usize;
    assert_eq!(unauthorized + limited, ATTEMPTS);
    assert!(
        (BURST as usize..=BURST as usize + refilled).contains(&unauthorized),
        "{unauthorized} passwords checked in {attack:?}"
    );
    assert!(
        retry_after.iter().all(|&s| (1..=3).contains(&s)),
        "{retry_after:?}"
    );
    assert!(
        valid_statuses.iter().all(|&s| s == 200),
        "{valid_statuses:?}"
    );
    assert!(
        browser_statuses.iter().all(|&s| s == 200),
        "{browser_statuses:?}"
    );
    latencies.sort();
    println!(
        "brute force: {ATTEMPTS} wrong passwords from 127.0.0.1 over {TASKS} keep-alive connections in {:.2} s \
         ({:.0} req/s): {unauthorized} x 401 (checked), {limited} x 429 (not checked, Retry-After 1-3 s); \
         valid user on 127.0.0.2: {} requests, all 200, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         signed-in browser on 127.0.0.1: {} requests, all 200",
        attack.as_secs_f64(),
        ATTEMPTS as f64 / attack.as_secs_f64(),
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        browser_statuses.len(),
    );
}

#[tokio::test]
async fn wrong_passwords_at_the_login_form_are_limited_too() {
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = AuthLayer::new(Token::new(TOKEN)).login_limit(3, PER);
    let server = TestServer::start(app(layer, hits)).await;
    let mut client = raw::KeepAlive::new(raw::connect_from(local(3), server.addr).await);
    let post = |password: &str| {
        let body = format!("password={password}&next=%2F");
        format!(
            "POST /auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let mut statuses = Vec::new();
    for i in 0..10 {
        let reply = client.send(&post(&format!("wrong{i}"))).await.unwrap();
        statuses.push(reply.status);
        if reply.status == 429 {
            let body = String::from_utf8_lossy(&reply.body);
            assert!(body.contains("Too many failed sign-in attempts"), "{body}");
            assert!(reply.header("retry-after").is_some());
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
    // The right password is not even checked now; from another address it works.
    let refused = client.send(&post(TOKEN)).await.unwrap();
    assert_eq!(refused.status, 429);
    assert!(refused.header("set-cookie").is_none());
    let mut other = raw::KeepAlive::new(raw::connect_from(local(4), server.addr).await);
    let signed_in = other.send(&post(TOKEN)).await.unwrap();
    assert_eq!(signed_in.status, 302);
    assert!(signed_in.header("set-cookie").is_some());
}

#[tokio::test]
async fn right_credentials_do_not_use_up_the_allowance() {
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = AuthLayer::new(Token::new(TOKEN)).login_limit(2, PER);
    let server = TestServer::start(app(layer, hits.clone())).await;
    let mut client = raw::KeepAlive::new(raw::connect_from(local(5), server.addr).await);
    for _ in 0..50 {
        let ok = client.send(&basic_request(TOKEN)).await.unwrap();
        assert_eq!(ok.status, 200);
    }
    let bearer = format!("GET /x?access_token={TOKEN} HTTP/1.1\r\nHost: gw\r\n\r\n");
    for _ in 0..50 {
        assert_eq!(client.send(bearer.as_bytes()).await.unwrap().status, 200);
    }
    // Two wrong ones are still allowed, then the third is refused.
    assert_eq!(client.send(&basic_request("x")).await.unwrap().status, 401);
    assert_eq!(client.send(&basic_request("y")).await.unwrap().status, 401);
    assert_eq!(client.send(&basic_request("z")).await.unwrap().status, 429);
    // Health checks are never refused, credentials or not.
    let health = "GET /health HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer wrong\r\n\r\n";
    assert_eq!(client.send(health.as_bytes()).await.unwrap().status, 200);
    // No credential at all is not an attempt: still 401, not 429.
    let anonymous = "GET /api/x HTTP/1.1\r\nHost: gw\r\n\r\n";
    assert_eq!(client.send(anonymous.as_bytes()).await.unwrap().status, 401);
    assert_eq!(hits.load(Ordering::Relaxed), 100);
}

#[tokio::test]
async fn no_login_limit_checks_every_attempt() {
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = AuthLayer::new(Token::new(TOKEN)).no_login_limit();
    let server = TestServer::start(app(layer, hits)).await;
    let mut client = raw::KeepAlive::new(raw::connect_from(local(6), server.addr).await);
    for i in 0..100 {
        let reply = client.send(&basic_request(&format!("w{i}"))).await.unwrap();
        assert_eq!(reply.status, 401);
    }
    assert_eq!(
        client.send(&basic_request(TOKEN)).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = AuthLayer::new(Token::new(TOKEN))
        .login_limit(2, PER)
        .trusted_proxies(["127.0.0.7", "10.0.0.0/8"]);
    let server = TestServer::start(app(layer, hits)).await;
    let via = |client: &str, password: &str| {
        let credentials = STANDARD.encode(format!("u:{password}"));
        format!(
            "GET /api/x HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: {client}\r\nAuthorization: Basic {credentials}\r\n\r\n"
        )
        .into_bytes()
    };
    // Through the trusted proxy on 127.0.0.7: each forwarded client has its own allowance.
    let mut proxy = raw::KeepAlive::new(raw::connect_from(local(7), server.addr).await);
    let statuses = async |proxy: &mut raw::KeepAlive, client: &str| {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(
                proxy
                    .send(&via(client, &format!("w{i}")))
                    .await
                    .unwrap()
                    .status,
            );
        }
        out
    };
    assert_eq!(statuses(&mut proxy, "203.0.113.1").await, [401, 401, 429]);
    assert_eq!(statuses(&mut proxy, "203.0.113.2").await, [401, 401, 429]);
    // A forged entry to the left of the real client is ignored; trusted hops are skipped.
    assert_eq!(
        statuses(&mut proxy, "198.51.100.9, 203.0.113.1, 10.1.2.3").await,
        [429, 429, 429]
    );
    // From an untrusted peer the header means nothing: the peer's own allowance is used.
    let mut direct = raw::KeepAlive::new(raw::connect_from(local(8), server.addr).await);
    assert_eq!(statuses(&mut direct, "203.0.113.3").await, [401, 401, 429]);
    assert_eq!(statuses(&mut direct, "203.0.113.4").await, [429, 429, 429]);
}

#[tokio::test]
async fn every_wrong_candidate_in_a_request_spends_an_allowance() {
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = AuthLayer::new(Token::new(TOKEN)).login_limit(10, PER);
    let server = TestServer::start(app(layer, hits.clone())).await;
    let both = |query: &str, bearer: &str| {
        format!(
            "GET /api/x?access_token={query} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {bearer}\r\n\r\n"
        )
        .into_bytes()
    };

    // Ten requests, each with a wrong `access_token` and a wrong Bearer token: 20 guesses
    // offered, but only the allowance of 10 is ever compared.
    let mut client = raw::KeepAlive::new(raw::connect_from(local(9), server.addr).await);
    let mut statuses = Vec::new();
    for i in 0..10 {
        let reply = client
            .send(&both(&format!("q{i}"), &format!("h{i}")))
            .await
            .unwrap();
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 429, 429, 429, 429, 429],
        "10 requests must not test 20 tokens"
    );

    // A wrong query token next to a right header: the request passes, and the wrong one
    // still counts.
    let layer = AuthLayer::new(Token::new(TOKEN)).login_limit(2, PER);
    let server = TestServer::start(app(layer, hits.clone())).await;
    let mut client = raw::KeepAlive::new(raw::connect_from(local(10), server.addr).await);
    assert_eq!(
        client.send(&both("wrong", TOKEN)).await.unwrap().status,
        200
    );
    assert_eq!(client.send(&basic_request("x")).await.unwrap().status, 401);
    assert_eq!(client.send(&basic_request("y")).await.unwrap().status, 429);
    assert_eq!(hits.load(Ordering::Relaxed), 1);
}
