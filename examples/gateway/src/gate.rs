//! The gate every request passes before and after its handler: it bounds
//! the query string, authenticates the API key, checks the endpoint scope
//! and the key's request rate, and afterwards writes the audit line and
//! counts the answer for the key's metrics.
//!
//! One middleware does all of it so that no endpoint can be added without
//! authentication, and so that every answer — including 401, 403, 414 and
//! 429 given here, and 400/404 given by actix-web — is logged and counted
//! exactly once (for a stream, when its head is sent: the duration is the
//! time to the first byte). The audit line names the key by its id only; the inbox a
//! request named is escaped (ASCII, no CR/LF) and cut short before it is
//! logged, since it is whatever the client sent.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Endpoint};
use crate::routes::State;

/// What a path is, for the scope check and the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// An endpoint a key must be allowed.
    Scoped(Endpoint),
    /// `/healthz`: open to all (load balancers), reveals nothing.
    Health,
    /// Anything else (a 404 once authenticated).
    Other,
}

fn route(path: &str) -> Route {
    match path {
        "/v1/wait" => Route::Scoped(Endpoint::Wait),
        "/v1/stream" => Route::Scoped(Endpoint::Stream),
        "/v1/stats" => Route::Scoped(Endpoint::Stats),
        "/metrics" => Route::Scoped(Endpoint::Metrics),
        "/" | "/v1/status" => Route::Scoped(Endpoint::Status),
        "/healthz" => Route::Health,
        _ => Route::Other,
    }
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Scoped(e) => e.name(),
            Route::Health => "healthz",
            Route::Other => "other",
        }
    }
}

/// The one field of the query the audit line shows.
#[derive(Deserialize)]
struct InboxParam {
    inbox: Option<String>,
}

/// Longest inbox value the audit line shows.
const MAX_LOGGED: usize = 64;

/// `s` as printable ASCII (`\r`, `\n`, `\u{…}` escaped), at most
/// [`MAX_LOGGED`] characters of it.
pub fn escape(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_LOGGED)
        .flat_map(char::escape_default)
        .collect();
    if s.chars().nth(MAX_LOGGED).is_some() {
        out.push_str("...");
    }
    out
}

/// A JSON error answer.
pub fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

/// The one 403 answer: the same for a thing that does not exist and for a
/// thing outside the key's scope.
pub fn forbidden() -> HttpResponse {
    error(StatusCode::FORBIDDEN, "forbidden")
}

/// The 401 answer. The status page (`GET /`, for people) challenges with
/// Basic, so that a browser asks for the key (as the password); the API
/// with Bearer.
fn unauthorized(page: bool) -> HttpResponse {
    let challenge = if page {
        "Basic realm=\"emap-gateway\", charset=\"UTF-8\""
    } else {
        "Bearer realm=\"emap-gateway\""
    };
    HttpResponse::Unauthorized()
        .insert_header((WWW_AUTHENTICATE, challenge))
        .json(json!({ "error": "missing or invalid API key" }))
}

/// The caller of a request that passed the gate (set by [`gate`]).
pub fn caller(req: &actix_web::HttpRequest, state: &State) -> Arc<Caller> {
    req.extensions()
        .get::<Arc<Caller>>()
        .cloned()
        // Not reachable through the gate; the pseudo-caller's scope is
        // empty whenever keys are required.
        .unwrap_or_else(|| state.keys.nobody().clone())
}

/// The middleware (see the module documentation).
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let start = Instant::now();
    let Some(state) = req.app_data::<web::Data<State>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let route = route(req.path());
    let inbox = web::Query::<InboxParam>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().inbox)
        .map_or_else(|| "-".to_owned(), |i| escape(&i));
    let mut caller = state.keys.nobody().clone();
    let refused = 'gate: {
        if req.query_string().len() > state.config.http.max_query {
            break 'gate Some(error(StatusCode::URI_TOO_LONG, "query string too long"));
        }
        if route == Route::Health {
            break 'gate None;
        }
        // The status page, for people, alone takes (and asks for) Basic.
        let page = req.path() == "/";
        let authorization = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        match state.keys.authenticate(authorization, page) {
            Some(c) => caller = c,
            None => break 'gate Some(unauthorized(page)),
        }
        if let Route::Scoped(e) = route
            && !caller.scope.endpoint(e)
        {
            break 'gate Some(forbidden());
        }
        if let Err(seconds) = caller.take_token(Instant::now()) {
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "request rate exceeded");
            if let Ok(v) = seconds.to_string().parse() {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
            break 'gate Some(resp);
        }
        req.extensions_mut().insert(caller.clone());
        None
    };
    let result = match refused {
        Some(resp) => Ok(req.into_response(resp)),
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body),
    };
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    caller.usage.count(status.as_u16());
    tracing::info!(
        target: "emap_gateway::audit",
        key = %caller.id,
        inbox = %inbox,
        endpoint = %route.name(),
        status = status.as_u16(),
        duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_logs_on_one_line() {
        assert_eq!(escape("signups"), "signups");
        assert_eq!(escape("a\r\nX-Injected: 1"), "a\\r\\nX-Injected: 1");
        assert_eq!(escape("\u{2028}é"), "\\u{2028}\\u{e9}");
        let long = "x".repeat(1000);
        assert_eq!(escape(&long).len(), MAX_LOGGED + 3);
    }

    #[test]
    fn routes() {
        assert_eq!(route("/v1/wait"), Route::Scoped(Endpoint::Wait));
        assert_eq!(route("/metrics"), Route::Scoped(Endpoint::Metrics));
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(route("/"), Route::Scoped(Endpoint::Status));
        assert_eq!(route("/v1/status"), Route::Scoped(Endpoint::Status));
        assert_eq!(route("/v1/wait/"), Route::Other);
    }
}
