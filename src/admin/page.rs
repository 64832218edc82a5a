//! The admin page as HTML: the [`Snapshot`] in three tables, a form per action.

use std::fmt::Write as _;
use std::sync::LazyLock;

use http::header::HeaderValue;
use http::{Response, StatusCode};

use super::Snapshot;
use crate::html::escape;
use crate::response::{hardened, html, style_csp};
use crate::Body;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;margin-bottom:2rem}th,td{border:1px solid #ddd;\
padding:.3rem .6rem;text-align:left}th{background:#f5f5f5}form{display:inline}\
td.failure{max-width:30rem;font-size:.9em}";

/// Nothing but the page's own style and forms posting to this origin.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| style_csp(STYLE));

/// `value` or an empty cell.
fn cell(value: Option<impl std::fmt::Display>) -> String {
    value
        .map(|value| escape(&value.to_string()))
        .unwrap_or_default()
}

/// The page for `snapshot`.
pub(super) fn render(snapshot: &Snapshot) -> Response<Body> {
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"robots\" content=\"noindex\"><title>marimo-rs admin</title>\
         <style>{STYLE}</style></head><body><h1>marimo-rs admin</h1>\
         <h2>Mounts</h2><table><tr><th>path</th><th>kind</th></tr>"
    );
    for mount in &snapshot.mounts {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(&mount.path),
            mount.kind
        );
    }
    page.push_str(
        "</table><h2>Backends</h2><table><tr><th>id</th><th>path</th><th>notebook</th>\
         <th>mode</th><th>state</th><th>pid</th><th>uptime (s)</th><th>starts</th>\
         <th>restarts</th><th>memory (MiB)</th><th>CPU (s)</th><th>sessions</th>\
         <th>last failure</th><th></th></tr>",
    );
    for backend in &snapshot.backends {
        let failure = backend
            .last_failure
            .as_ref()
            .map(|failure| format!("{}: {}", failure.at, failure.reason));
        let memory = backend
            .rss_bytes
            .map(|bytes| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0)));
        let _ = write!(
            page,
            "<tr><td>{id}</td><td>{path}</td><td>{notebook}</td><td>{mode}</td>\
             <td>{state}</td><td>{pid}</td><td>{uptime}</td><td>{starts}</td>\
             <td>{restarts}</td><td>{memory}</td><td>{cpu}</td><td>{sessions}</td>\
             <td class=\"failure\">{failure}</td><td>\
             <form method=\"post\" action=\"backends/{id}/restart\"><button>restart</button></form> \
             <form method=\"post\" action=\"backends/{id}/stop\"><button>stop</button></form>\
             </td></tr>",
            id = backend.id,
            path = escape(&backend.path),
            notebook = escape(&backend.notebook),
            mode = backend.mode,
            state = backend.state,
            pid = cell(backend.pid),
            uptime = cell(backend.uptime_seconds),
            starts = backend.starts,
            restarts = backend.restarts,
            memory = cell(memory),
            cpu = cell(backend.cpu_seconds),
            sessions = backend.sessions,
            failure = cell(failure),
        );
    }
    page.push_str("</table><h2>Login limit</h2>");
    match &snapshot.login_limit {
        Some(limit) => {
            let _ = write!(
                page,
                "<p>{} failed attempts per {} s per address; {} addresses tracked, {} refused \
                 now.</p>",
                limit.burst, limit.per_seconds, limit.tracked_addresses, limit.limited_addresses
            );
        }
        None => page.push_str("<p>No login limit (authentication is off, or the limit is).</p>"),
    }
    page.push_str(
        "<p>The same as JSON: <a href=\"state\">state</a>. \"stop\" ends a backend's process \
         until the next request to it; \"restart\" starts a new one at once.</p></body></html>\n",
    );
    hardened(html(StatusCode::OK, page), &CSP)
}
