//! Noticing a client that hangs up while its request waits.
//!
//! actix-web keeps running a handler whose client has gone (HTTP/1 reads
//! nothing more while the request is being served), so a long-poll would
//! keep its emap subscription until its timeout. At accept time the gateway
//! keeps a duplicate of the client socket (under TLS, of the TCP socket
//! beneath the TLS stream); a waiting handler races its wait against
//! [`hung_up`], which resolves when the peer closes its side.

use std::sync::Arc;

use actix_web::HttpRequest;

/// A duplicate of the client socket, stored as connection data.
#[derive(Clone)]
pub struct PeerSocket(Arc<socket2::Socket>);

/// The `on_connect` hook: remembers the connection's socket.
pub fn on_connect(io: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    use actix_web::rt::net::TcpStream;
    let tcp = io.downcast_ref::<TcpStream>().or_else(|| {
        io.downcast_ref::<TlsStream<TcpStream>>()
            .map(|t| t.get_ref().0)
    });
    if let Some(tcp) = tcp
        && let Ok(dup) = socket2::SockRef::from(tcp).try_clone()
    {
        ext.insert(PeerSocket(Arc::new(dup)));
    }
}

/// Resolves when the client of `req` has closed its side of the
/// connection; never resolves when that cannot be known (or when the client
/// sends more bytes, e.g. a pipelined request).
pub async fn hung_up(req: &HttpRequest) {
    let watch = req
        .conn_data::<PeerSocket>()
        .and_then(|p| p.0.try_clone().ok())
        .and_then(|s| {
            let std: std::net::TcpStream = s.into();
            std.set_nonblocking(true).ok()?;
            tokio::net::TcpStream::from_std(std).ok()
        });
    let Some(stream) = watch else {
        return std::future::pending().await;
    };
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}
