//! The proxy between clients and real marimo backends, where it used to fail or leak: clients
//! speaking HTTP/2, a backend that drops a kept-alive connection, and the notebook's absolute
//! location in the page. Real backends (the managed virtualenv), real sockets.

mod common;

use bytes::Bytes;
use common::marimo::{first_script, intro_at, Gateway};
use common::{example_notebook, Reply, Site, HTML, JSON};
use http::{Method, Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use marimo_rs::create_app;

/// One request over HTTP/2 with prior knowledge (h2c), as `serve` accepts it.
async fn h2(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::default()).unwrap())
        .await
        .expect("HTTP/2 request failed");
    assert_eq!(
        response.version(),
        Version::HTTP_2,
        "{url} answered over HTTP/2"
    );
    common::reply(response).await
}

#[tokio::test]
async fn http2_clients_get_the_page_the_api_and_the_assets() {
    let server = Gateway::start(intro_at("/nb")).await;

    let page = h2(Method::GET, &server.url("/nb/"), &[HTML]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("__MARIMO_MOUNT_CONFIG__"),
        "marimo's page"
    );
    let api = h2(Method::GET, &server.url("/nb/api/version"), &[]).await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    assert_eq!(api.body.trim_matches('"'), marimo_rs::MARIMO_VERSION);
    let health = h2(Method::GET, &server.url("/nb/health"), &[]).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let head = h2(Method::HEAD, &server.url("/nb/api/version"), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    let script = first_script(&page.body);
    let asset = h2(Method::GET, &server.url(&format!("/nb/{script}")), &[]).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert!(asset.header("content-type").unwrap().contains("javascript"));
    server.stop().await;
}

#[tokio::test]
async fn a_backend_that_drops_a_kept_alive_connection_costs_no_request() {
    let server = Gateway::start(intro_at("/nb")).await;
    let failing = "/nb/api/kernel/set_ui_element_value";
    let body = r#"{"objectIds": [], "values": []}"#;
    let json = [JSON];
    for round in 0..5 {
        // Without a session header marimo's handler raises: Starlette answers 500 (no
        // `Connection: close`) and uvicorn then closes the connection, which the gateway's
        // pool still holds as idle.
        let broken = server.send(Method::POST, failing, &json, body).await;
        assert_eq!(
            broken.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "round {round}: {broken:?}"
        );
        // Whatever comes next on that connection is sent again on a fresh one.
        let next = server.get("/nb/api/version", &[]).await;
        assert_eq!(next.status, StatusCode::OK, "round {round}: {next:?}");
        let again = server.send(Method::POST, failing, &json, body).await;
        assert_eq!(
            again.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "round {round}: a small POST is replayed too: {again:?}"
        );
        let page = server.get("/nb/", &[HTML]).await;
        assert_eq!(page.status, StatusCode::OK, "round {round}: {page:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn run_mode_pages_name_no_folder_in_any_spelling_whatever_the_client_accepts() {
    let base = tempfile::tempdir().unwrap();
    // A project root above the notebook (marimo then reports it as the LSP root), and names
    // that marimo's spellings (HTML, JSON, `file://` URI, URI component) each write
    // differently. Every folder's name holds `leak-`, which every spelling keeps as is.
    let project = base.path().join("leak-project root");
    let dir = project.join("leak-notebooks ü").join("leak-a&b'c");
    std::fs::create_dir_all(dir.join("public")).unwrap();
    std::fs::write(project.join("pyproject.toml"), "[project]\nname = \"x\"\n").unwrap();
    std::fs::write(dir.join("public").join("hello.txt"), "public hello").unwrap();
    let notebook = dir.join("nb.py");
    std::fs::copy(example_notebook("intro.py"), &notebook).unwrap();
    let server = Gateway::start(create_app().with_app("/nb", &notebook)).await;
    // So does the random name of the temporary folder (letters, digits, a dot).
    let base_name = base.path().file_name().unwrap().to_str().unwrap();

    let mut lengths = Vec::new();
    for accept in [None, Some("*/*"), Some("text/html,application/xhtml+xml")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let page = server.get("/nb/", &headers).await;
        assert_eq!(page.status, StatusCode::OK, "{accept:?}");
        assert!(page.body.contains("__MARIMO_MOUNT_CONFIG__"), "{accept:?}");
        for marker in ["leak-", base_name] {
            assert!(
                !page.body.contains(marker),
                "{accept:?}: the page names a folder of the notebook's: {}",
                page.body
            );
        }
        assert!(page.body.contains(r#""filename": "nb.py""#), "{accept:?}");
        assert!(
            page.body.contains(r#"const notebookId = "nb.py";"#),
            "{accept:?}"
        );
        lengths.push(page.body.len());
    }
    assert!(lengths.windows(2).all(|w| w[0] == w[1]), "{lengths:?}");
    // HEAD announces the length of the page GET sends.
    for accept in ["*/*", "text/html"] {
        let head = server
            .send(Method::HEAD, "/nb/", &[("accept", accept)], "")
            .await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(
            head.header("content-length"),
            Some(lengths[0].to_string().as_str()),
            "HEAD with {accept}"
        );
    }
    // The rewritten notebook id still finds the notebook's public folder.
    let public = server
        .get("/nb/public/hello.txt", &[("x-notebook-id", "nb.py")])
        .await;
    assert_eq!(public.status, StatusCode::OK, "{public:?}");
    assert_eq!(public.body, "public hello");
    server.stop().await;
}
