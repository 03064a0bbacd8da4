//! Sockets and TLS: the only code in emap that touches either.
//!
//! [`dial`] resolves the host, orders its addresses IPv6 and IPv4
//! interleaved ([`interleave`], RFC 8305's idea) and tries them in turn
//! ([`dial_addrs`]), each with its share of what remains of the dial
//! timeout, so one blackholed address (often IPv6) cannot use up the whole
//! timeout; the connected socket gets TCP keepalive and `TCP_NODELAY`.
//! [`Tls`] builds the rustls configuration (ring as the crypto provider,
//! webpki roots plus the credential's extra roots, or the caller's own
//! `ClientConfig`) and performs handshakes; [`Stream`] is the
//! plaintext-or-TLS byte stream the connection driver reads and writes.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;
use crate::credential::TlsConfig;

/// How often TCP keepalive probes an idle connection, so that a NAT or a
/// dead peer is noticed even when IDLE is quiet.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 4;

/// Connects to `host:port` within `timeout`: resolves the name (within the
/// timeout, `Timeout("DNS lookup")` otherwise), then tries each address in
/// [`interleave`] order with [`dial_addrs`] and what remains of the timeout.
///
/// A name that does not resolve is `Error::Io` of kind
/// [`io::ErrorKind::NotFound`] (see [`is_unknown_host`]); no other failure
/// of `dial` has that kind.
pub(crate) async fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, Error> {
    let start = tokio::time::Instant::now();
    let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| Error::Timeout("DNS lookup"))?
        .map_err(|e| unknown_host(host, e))?;
    let addrs = interleave(addrs.collect());
    if addrs.is_empty() {
        return Err(unknown_host(
            host,
            io::Error::new(io::ErrorKind::NotFound, "the name has no address"),
        ));
    }
    tracing::trace!(host, count = addrs.len(), "resolved");
    dial_addrs(&addrs, timeout.saturating_sub(start.elapsed())).await
}

/// Tries `addrs` in order until one connects, within `timeout` in total.
/// Each attempt gets an equal share of what remains (`remaining / addresses
/// left`), so a blackholed address costs at most its share and a failing
/// one returns its time to the next. When every attempt fails, the error is
/// the last one other than a timeout (a refusal says more than a silence),
/// else `Timeout("dial")`.
pub(crate) async fn dial_addrs(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream, Error> {
    let start = tokio::time::Instant::now();
    let mut failure: Option<Error> = None;
    for (i, addr) in addrs.iter().enumerate() {
        let left = u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        let share = timeout.saturating_sub(start.elapsed()) / left;
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return configure(stream),
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "TCP connect failed");
                failure = Some(e.into());
            }
            Err(_) => tracing::debug!(%addr, ?share, "TCP connect timed out"),
        }
    }
    Err(failure.unwrap_or(if addrs.is_empty() {
        Error::Io(Arc::new(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to connect to",
        )))
    } else {
        Error::Timeout("dial")
    }))
}

/// Sets `TCP_NODELAY` and keepalive on a fresh connection.
fn configure(stream: TcpStream) -> Result<TcpStream, Error> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(&stream);
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    sock.set_tcp_keepalive(&ka)?;
    Ok(stream)
}

/// Orders resolved addresses as RFC 8305 §4 suggests: the two families
/// alternate, starting with the family of the first address (the
/// resolver's preference), each family keeping the resolver's order.
/// Duplicates are dropped: a repeated blackholed address must not take two
/// shares of the timeout.
pub(crate) fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_v6 = first.is_ipv6();
    let mut unique = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    let (preferred, other): (Vec<_>, Vec<_>) =
        unique.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(preferred.len() + other.len());
    let (mut p, mut o) = (preferred.into_iter(), other.into_iter());
    loop {
        match (p.next(), o.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// A host name that resolved to no address, carried inside the
/// `io::Error` of an `Error::Io` (kind [`io::ErrorKind::NotFound`]).
#[derive(Debug)]
struct UnknownHost {
    host: String,
    cause: io::Error,
}

impl fmt::Display for UnknownHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown host {:?}: {}", self.host, self.cause)
    }
}

impl std::error::Error for UnknownHost {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

pub(crate) fn unknown_host(host: &str, cause: io::Error) -> Error {
    Error::Io(Arc::new(io::Error::new(
        io::ErrorKind::NotFound,
        UnknownHost {
            host: host.to_owned(),
            cause,
        },
    )))
}

/// Whether `e` is [`dial`]'s "the host name does not resolve" (the resolver
/// answered that the name is unknown, or gave no address). Such an error
/// will not go away by retrying soon unless the DNS changes; note that the
/// system resolver also reports a temporary DNS failure (EAI_AGAIN) this
/// way, indistinguishably.
pub(crate) fn is_unknown_host(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == io::ErrorKind::NotFound
        && io.get_ref().is_some_and(|inner| inner.is::<UnknownHost>()))
}

/// Asks the kernel to acknowledge received data at once. Linux clears the
/// flag again by itself, so it is set after each read: without it, a
/// server that waits with Nagle for our ACK (Cyrus) adds ~40 ms per mail.
pub(crate) fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// A TLS client configuration ready for handshakes.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
}

impl Tls {
    /// Builds the configuration once per session.
    pub(crate) fn new(cfg: &TlsConfig) -> Result<Self, Error> {
        let config = match &cfg.client_config {
            Some(c) => c.clone(),
            None => {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                for cert in &cfg.extra_roots {
                    roots.add(cert.clone()).map_err(|e| {
                        Error::InvalidConfig(format!("unusable root certificate: {e}"))
                    })?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Arc::new(config)
            }
        };
        Ok(Tls {
            connector: TlsConnector::from(config),
        })
    }

    /// Runs the handshake over `tcp` within `timeout`, verifying the
    /// certificate for `host`.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        timeout: Duration,
    ) -> Result<Stream, Error> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| Error::InvalidConfig(format!("invalid TLS server name {host:?}")))?;
        let tls = tokio::time::timeout(timeout, self.connector.connect(name, tcp))
            .await
            .map_err(|_| Error::Timeout("TLS handshake"))??;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A connection's byte stream: plaintext or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP (before STARTTLS, or `TlsMode::None`).
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// Taken apart for a STARTTLS upgrade; every operation fails.
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream detached for a TLS upgrade",
    )
}

impl Stream {
    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            Stream::Detached => None,
        }
    }

    /// Takes the plaintext socket out for a STARTTLS upgrade.
    pub(crate) fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Detached) {
            Stream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn interleave_alternates_families_starting_with_the_first() {
        let v6 = [
            "[2001:db8::1]:143",
            "[2001:db8::2]:143",
            "[2001:db8::3]:143",
        ]
        .map(a);
        let v4 = ["192.0.2.1:143", "192.0.2.2:143"].map(a);
        assert_eq!(
            interleave(vec![v6[0], v6[1], v6[2], v4[0], v4[1]]),
            vec![v6[0], v4[0], v6[1], v4[1], v6[2]]
        );
        assert_eq!(
            interleave(vec![v4[0], v4[1], v6[0], v6[1], v6[2]]),
            vec![v4[0], v6[0], v4[1], v6[1], v6[2]]
        );
        // Already mixed: each family keeps its own order.
        assert_eq!(
            interleave(vec![v6[0], v6[1], v4[0], v6[2], v4[1]]),
            vec![v6[0], v4[0], v6[1], v4[1], v6[2]]
        );
    }

    #[test]
    fn interleave_keeps_one_family_and_drops_duplicates() {
        let v4 = ["192.0.2.1:143", "192.0.2.2:143"].map(a);
        assert_eq!(interleave(vec![v4[1], v4[0]]), vec![v4[1], v4[0]]);
        assert_eq!(
            interleave(vec![v4[0], v4[0], v4[1], v4[0]]),
            vec![v4[0], v4[1]]
        );
        assert!(interleave(Vec::new()).is_empty());
    }

    /// A loopback address whose SYNs are dropped: a listener with backlog 0
    /// whose accept queue is already full (Linux then drops further SYNs).
    /// Fills the queue until a connect attempt goes unanswered, so the
    /// premise is checked, not assumed. Keep the returned sockets alive.
    async fn blackhole() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener.bind(&a("127.0.0.1:0").into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => queued.push(s),
                Ok(Err(e)) => panic!("loopback connect failed: {e}"),
                Err(_) => return (addr, listener, queued),
            }
        }
        panic!("the accept queue never filled: cannot make a blackhole on loopback");
    }

    /// Item 15: a blackholed first address takes only its share of the
    /// dial timeout; the next address is tried and connects.
    #[tokio::test]
    async fn a_blackholed_address_does_not_stop_the_next_one() {
        let (hole, _listener, _queued) = blackhole().await;
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        let stream = dial_addrs(&[hole, good_addr], Duration::from_secs(2))
            .await
            .expect("the second address was not tried");
        assert_eq!(stream.peer_addr().unwrap(), good_addr);
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn every_address_failing_gives_the_most_telling_error() {
        let (hole, _listener, _queued) = blackhole().await;
        let err = dial_addrs(&[hole, hole], Duration::from_millis(400))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout("dial")), "{err:?}");
        // A closed port refuses: that says more than the blackhole's silence,
        // whichever order they come in.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        for addrs in [[hole, closed], [closed, hole]] {
            let err = dial_addrs(&addrs, Duration::from_millis(400))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused),
                "{err:?}"
            );
            assert!(!is_unknown_host(&err));
        }
        let err = dial_addrs(&[], Duration::from_secs(1)).await.unwrap_err();
        assert!(!is_unknown_host(&err), "{err:?}");
    }

    /// A name that cannot resolve is recognisable as such. An empty label
    /// cannot be encoded in a DNS query, so the resolver refuses the name
    /// without sending anything.
    #[tokio::test]
    async fn an_unknown_host_is_recognisable() {
        let err = dial("unknown..invalid", 143, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(is_unknown_host(&err), "{err:?}");
        assert!(err.is_transient(), "the session decides; the error is I/O");
        assert!(
            err.to_string()
                .contains("unknown host \"unknown..invalid\""),
            "{err}"
        );
        // An IP literal needs no resolver.
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = good.local_addr().unwrap().port();
        dial("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();
    }
}
