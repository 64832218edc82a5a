//! WebSocket tunnelling: forward the handshake, and on `101` splice the two upgraded
//! connections together with `copy_bidirectional`.
//!
//! The tunnel is byte-level: frames, pings and closes pass through untouched, so marimo's
//! kernel pings keep an idle session alive and no timeout here cuts it.

use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::uds::UdsConnector;
use super::{mount_prefix, prepare_request, prepare_response, ProxyError, Via};
use crate::Body;

pub(super) async fn tunnel<G: Send + 'static>(
    connector: &UdsConnector,
    mut req: Request<Body>,
    guard: G,
) -> Result<Response<Body>, ProxyError> {
    let prefix = mount_prefix(&req);
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let upstream_req = prepare_request(
        Request::from_parts(parts, Body::empty()),
        &prefix,
        Via::Tunnel,
    );

    // A dedicated connection: once upgraded it belongs to this tunnel, not to the pool.
    let stream = connector
        .connect()
        .await
        .map_err(|_| ProxyError::Unreachable)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(stream)
        .await
        .map_err(|e| ProxyError::Broken(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "backend WebSocket connection ended with an error");
        }
    });
    let mut response = sender
        .send_request(upstream_req)
        .await
        .map_err(|e| ProxyError::Broken(e.to_string()))?;

    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused by the backend (404, 403…): relay it as a normal response.
        return Ok(prepare_response(response.map(Body::new), &prefix));
    }
    let backend_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let _guard = guard;
        let (backend, client) = match tokio::try_join!(backend_upgrade, client_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade did not complete");
                return;
            }
        };
        let mut backend = TokioIo::new(backend);
        let mut client = TokioIo::new(client);
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => tracing::trace!(up, down, "WebSocket tunnel closed"),
            Err(error) => tracing::debug!(%error, "WebSocket tunnel closed with an error"),
        }
    });
    let (parts, _) = response.into_parts();
    Ok(prepare_response(
        Response::from_parts(parts, Body::empty()),
        &prefix,
    ))
}
