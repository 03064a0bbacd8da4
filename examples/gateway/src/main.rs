//! emap-gateway: one emap Registry embedded in an actix-web service, so that
//! many remote workers share a few IMAP connections over HTTP.
//!
//! ```text
//! SIGNUPS_PASSWORD=... cargo run --release -p emap-gateway -- --config gateway.toml
//! curl 'http://127.0.0.1:8080/v1/wait?inbox=signups&to=task42@example.com&timeout=2m'
//! ```
//!
//! See `config.rs` for the file format and `routes.rs` for the endpoints.

mod config;
mod json;
mod peer;
mod routes;

use std::process::ExitCode;

use actix_web::{App, HttpServer, web};
use emap::Registry;

#[actix_web::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
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
    let listen = config.listen.clone();
    let state = web::Data::new(routes::State::new(handle.clone(), config));
    let server = HttpServer::new(move || {
        App::new()
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
    })
    .on_connect(peer::on_connect)
    .shutdown_timeout(5)
    .bind(&listen);
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    for addr in server.addrs() {
        println!("listening on http://{addr}");
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
