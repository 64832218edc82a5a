//! Proves the DevTools driver (tests/common/cdp.rs) against a real headless Chromium and a tiny
//! local page, without the gateway: a login form submitted with Enter, and a range input inside
//! an open shadow root moved with a real ArrowRight key press.
//!
//! Without Chromium the test is skipped with a warning, except under CI (`CI` set), where it
//! fails: run `.ci/install-chromium` first.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use common::cdp::Browser;

const PASSWORD: &str = "s3cret";

/// The page: a login form (GET to `/`, which then says "Welcome") and a custom element whose
/// open shadow root holds a slider and its "Value: N" label.
fn page(welcome: bool) -> String {
    let banner = if welcome { "<h1>Welcome</h1>" } else { "" };
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cdp selftest</title></head>
<body>
{banner}
<form method="get" action="/">
  <input type="password" name="password" id="password">
  <button type="submit">Log in</button>
</form>
<value-slider></value-slider>
<script>
customElements.define('value-slider', class extends HTMLElement {{
  connectedCallback() {{
    const root = this.attachShadow({{ mode: 'open' }});
    root.innerHTML = '<input type="range" role="slider" min="1" max="10" value="3">' +
                     '<p>Value: <b>3</b></p>';
    const input = root.querySelector('input');
    input.addEventListener('input', () => {{
      root.querySelector('b').textContent = input.value;
    }});
  }}
}});
</script>
</body></html>"#
    )
}

/// A minimal HTTP/1.0 server: `GET /?password=s3cret` gets the page with "Welcome", any other
/// `GET /...` the page without it, other paths 404. One request per connection.
async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf);
            let target = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = if target == "/" || target.starts_with("/?") {
                let welcome = target.contains(&format!("password={PASSWORD}"));
                ("200 OK", page(welcome))
            } else {
                ("404 Not Found", "not found".to_owned())
            };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[tokio::test]
async fn drives_a_real_page_through_shadow_dom() {
    if !Browser::available() {
        return;
    }
    let timeout = Duration::from_secs(20);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(listener));

    let t = Instant::now();
    let browser = Browser::launch().await.expect("launch Chromium");
    let page = browser.new_page().await.expect("new page");
    eprintln!("launch + new page: {:?}", t.elapsed());

    page.goto(&base).await.expect("goto");
    // The slider's label is only inside the shadow root: the deep text sees it, innerText not.
    page.wait_for_text("Value: 3", timeout).await.unwrap();
    let light = page.eval("document.body.innerText").await.unwrap();
    assert!(!light.as_str().unwrap().contains("Value: 3"), "{light}");
    assert!(!page.text().await.unwrap().contains("Welcome"));

    // Log in: type into the password field, submit with a real Enter key (a navigation).
    page.type_into("input[type=password]", PASSWORD)
        .await
        .unwrap();
    page.press_key("Enter").await.unwrap();
    page.wait_for_text("Welcome", timeout).await.unwrap();
    assert!(page
        .eval("location.search")
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .contains(PASSWORD));

    // Move the slider inside the shadow root with a real key press.
    page.wait_for_text("Value: 3", timeout).await.unwrap();
    page.focus_deep("[role=slider]").await.unwrap();
    let t = Instant::now();
    page.press_key("ArrowRight").await.unwrap();
    page.wait_for_text("Value: 4", timeout).await.unwrap();
    eprintln!("slider update: {:?}", t.elapsed());
    let value = page.on_element("[role=slider]", "el.value").await.unwrap();
    assert_eq!(value, "4");

    // Errors are errors, not hangs.
    assert!(page.focus_deep("#does-not-exist").await.is_err());
    assert!(page
        .eval("(() => { throw new Error('boom') })()")
        .await
        .is_err());
    let err = page
        .wait_for_text("never there", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Value: 4"), "{err}");

    let png =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts/cdp-selftest.png");
    let _ = std::fs::remove_file(&png);
    page.screenshot(&png).await.unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

    let pid = browser.pid();
    let profile = browser.profile_dir();
    drop(page);
    drop(browser);
    server.abort();
    // The browser process is gone (killed and reaped) and its profile removed.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!profile.exists());
}
