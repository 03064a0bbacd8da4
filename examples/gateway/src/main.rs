//! emap-gateway: one emap Registry embedded in an actix-web service, so that
//! many remote workers share a few IMAP connections over HTTP.
//!
//! ```text
//! SIGNUPS_PASSWORD=... cargo run --release -p emap-gateway -- --config gateway.toml
//! curl -H "Authorization: Bearer $KEY" --cacert ca.pem \
//!     'https://gw.example.com:8443/v1/wait?inbox=signups&to=task42@example.com&timeout=2m'
//! ```
//!
//! See `config.rs` for the file format (keys, TLS, limits), `gate.rs` for
//! authentication and the audit trail, `routes.rs` for the endpoints, and
//! `status.rs` for the HTML status page at `/` (and its rows as JSON at
//! `/v1/status`).
//! The first line on standard output is `listening on <scheme>://<addr>`;
//! logs (one audit line per request) go to standard error.

#![forbid(unsafe_code)]

mod auth;
mod config;
mod gate;
mod json;
mod peer;
mod routes;
mod status;

use std::process::ExitCode;
use std::sync::Arc;

use actix_web::{App, HttpServer, middleware, web};
use emap::Registry;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The listener's rustls configuration from the PEM files (ring provider,
/// as emap uses; TLS 1.2 and 1.3).
fn server_tls(files: &config::TlsFiles) -> Result<rustls::ServerConfig, String> {
    let cert_path = files.cert_file.display();
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| format!("tls.cert_file {cert_path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert_file {cert_path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls.cert_file {cert_path}: no certificate"));
    }
    // The error names the file, never the key material.
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| format!("tls.key_file {}: {e}", files.key_file.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: {e}"))
}

#[actix_web::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => path = args.next(),
            other => {
                eprintln!("error: unknown argument {other:?}; usage: emap-gateway --config FILE");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("usage: emap-gateway --config FILE");
        return ExitCode::from(2);
    };
    let config = match config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // Inside the actix System that actix-web runs: the embedded case.
    let handle = match Registry::start(emap::Config::default()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let tls = match config.tls.as_ref().map(server_tls).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if config.keys.is_empty() {
        tracing::warn!("no [[key]] configured: anyone who can connect reads every inbox");
    } else if tls.is_none() {
        tracing::warn!("API keys travel in plaintext: configure [tls] on any shared network");
    }
    let listen = config.listen.clone();
    let http = config.http.clone();
    let state = web::Data::new(routes::State::new(handle.clone(), config));
    // The status page's mail-per-minute rings.
    actix_rt::spawn(status::sample(state.clone().into_inner()));
    let server = HttpServer::new(move || {
        App::new()
            .wrap(middleware::from_fn(gate::gate))
            .app_data(state.clone())
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                let msg = e.to_string();
                actix_web::error::InternalError::from_response(
                    e,
                    actix_web::HttpResponse::BadRequest().json(serde_json::json!({ "error": msg })),
                )
                .into()
            }))
            .service(routes::wait)
            .service(routes::stream)
            .service(routes::stats)
            .service(routes::healthz)
            .service(routes::metrics)
            .service(status::page)
            .service(status::status_json)
    })
    .on_connect(peer::on_connect)
    .shutdown_timeout(5)
    .client_request_timeout(http.client_request_timeout)
    .client_disconnect_timeout(http.client_disconnect_timeout)
    .keep_alive(http.keep_alive)
    .tls_handshake_timeout(http.tls_handshake_timeout)
    .max_connections(http.max_connections)
    .backlog(http.backlog);
    let server = match tls {
        Some(tls) => server.bind_rustls_0_23(&listen, tls),
        None => server.bind(&listen),
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    for (addr, scheme) in server.addrs_with_scheme() {
        println!("listening on {scheme}://{addr}");
    }
    let result = server.run().await;
    // Graceful: the HTTP side has drained; now LOGOUT every session.
    handle.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
