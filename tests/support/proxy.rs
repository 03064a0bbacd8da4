//! A fault-injecting TCP proxy, placed between emap and the test Dovecot,
//! for faults a real server will not produce on demand: connections cut
//! both ways, links that go silent without closing, slow links, refused
//! connections, and a connection cut in the middle of a literal.
//!
//! emap connects to [`Proxy::port`] on 127.0.0.1; each accepted connection
//! is forwarded to the upstream port (Dovecot's plaintext IMAP). The proxy
//! runs on a thread of its own with its own tokio runtime, so it keeps
//! forwarding whatever the test's runtime is doing; the [`Proxy`] handle is
//! `Send + Sync`, its methods never block or await, and dropping it stops
//! the thread and closes every connection.
//!
//! Each connection is two pumps (client → server, server → client). A pump
//! reads chunks (at most 16 KiB) into a queue and a writer forwards them,
//! applying the faults per chunk: it holds them while the connection is
//! blackholed, waits the configured latency before each one, and on the
//! server → client side spends the cut budget, forwarding only the bytes
//! left in it and then closing the connection. An EOF is passed on as a
//! half-close after the queued chunks; an EOF (or error) on a blackholed
//! connection tears the whole connection down, so the upstream does not
//! keep a connection the client has given up on.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// The largest chunk one read takes (and one fault step forwards).
const CHUNK: usize = 16 * 1024;

/// A running proxy from `127.0.0.1:port` to `127.0.0.1:upstream`.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// State shared between the handle and the proxy thread.
struct Shared {
    upstream: SocketAddr,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    live: AtomicUsize,
    cuts: AtomicUsize,
    to_client: AtomicU64,
    refuse: AtomicBool,
    latency_nanos: AtomicU64,
    next_id: AtomicU64,
    links: Mutex<HashMap<u64, Arc<Link>>>,
}

/// The controls of one proxied connection.
struct Link {
    /// Set once: the connection is torn down both ways.
    closed: watch::Sender<bool>,
    /// While set, nothing is forwarded in either direction.
    blackholed: watch::Sender<bool>,
    /// Server → client bytes still forwarded before the cut (`None`: no cut
    /// planned).
    cut_budget: Mutex<Option<usize>>,
}

impl Link {
    fn new() -> Link {
        Link {
            closed: watch::Sender::new(false),
            blackholed: watch::Sender::new(false),
            cut_budget: Mutex::new(None),
        }
    }

    fn close(&self) {
        self.closed.send_replace(true);
    }
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:upstream` on a free port.
    pub fn start(upstream: u16) -> Proxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("proxy: binding 127.0.0.1:0 failed: {e}"));
        let port = listener.local_addr().expect("proxy local_addr").port();
        listener
            .set_nonblocking(true)
            .expect("proxy: non-blocking listener");
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, upstream)),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            to_client: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            latency_nanos: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            links: Mutex::new(HashMap::new()),
        });
        let shutdown = watch::Sender::new(false);
        let thread = {
            let shared = shared.clone();
            let mut stop = shutdown.subscribe();
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("proxy runtime");
                    runtime.block_on(async move {
                        let listener =
                            TcpListener::from_std(listener).expect("proxy: tokio listener");
                        loop {
                            tokio::select! {
                                accepted = listener.accept() => {
                                    if let Ok((client, _)) = accepted {
                                        tokio::spawn(serve(shared.clone(), client));
                                    }
                                }
                                _ = until(&mut stop, true) => break,
                            }
                        }
                    });
                    // Dropping the runtime drops every connection task, and
                    // with them every socket.
                    drop(runtime);
                })
                .expect("spawning the proxy thread")
        };
        Proxy {
            port,
            shared,
            shutdown,
            thread: Some(thread),
        }
    }

    /// The port emap should connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed right after accept because of [`Proxy::refuse`].
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections currently forwarded (connected to the upstream and not
    /// yet torn down).
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Connections cut by [`Proxy::cut_after`] so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the server to clients so far, over all
    /// connections: shows how far a response has got (e.g. a FETCH under
    /// way on a slow link).
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }

    /// Closes every live connection, both ways, at once (queued bytes are
    /// dropped). New connections are forwarded as usual.
    pub fn close_all(&self) {
        for link in self.links() {
            link.close();
        }
    }

    /// Stops (`true`) or resumes (`false`) forwarding in both directions on
    /// the connections live now, without closing them: bytes are held, and
    /// forwarded when the blackhole is lifted. Connections accepted later
    /// are not blackholed, so a client that gives up on a silent link and
    /// reconnects gets through. A blackholed connection whose client (or
    /// server) closes is torn down both ways.
    pub fn blackhole(&self, on: bool) {
        for link in self.links() {
            link.blackholed.send_replace(on);
        }
    }

    /// Waits `latency` before forwarding each chunk, in both directions, on
    /// every connection (live and future). `Duration::ZERO` turns it off.
    pub fn latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.shared.latency_nanos.store(nanos, Ordering::SeqCst);
    }

    /// While `on`, new connections are accepted and closed at once, before
    /// any byte (the client sees EOF instead of a greeting). Live
    /// connections are not affected.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// On every live connection, forwards at most `n` more bytes from the
    /// server to the client, then closes the connection both ways: with `n`
    /// inside a large FETCH response, the client loses the link in the
    /// middle of a literal. Connections accepted later are not cut.
    pub fn cut_after(&self, n: usize) {
        for link in self.links() {
            *link.cut_budget.lock().expect("cut budget") = Some(n);
        }
    }

    fn links(&self) -> Vec<Arc<Link>> {
        self.shared
            .links
            .lock()
            .expect("proxy links")
            .values()
            .cloned()
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Resolves once `rx` holds `value` (or its sender is gone).
async fn until(rx: &mut watch::Receiver<bool>, value: bool) {
    let _ = rx.wait_for(|v| *v == value).await;
}

/// One accepted connection: connect upstream, pump both ways, clean up.
async fn serve(shared: Arc<Shared>, client: TcpStream) {
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    if shared.refuse.load(Ordering::SeqCst) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return;
    }
    // An unreachable upstream looks like a refused connection: EOF.
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let link = Arc::new(Link::new());
    shared
        .links
        .lock()
        .expect("proxy links")
        .insert(id, link.clone());
    shared.live.fetch_add(1, Ordering::SeqCst);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(&shared, &link, client_read, server_write, false),
        pump(&shared, &link, server_read, client_write, true),
    );
    shared.links.lock().expect("proxy links").remove(&id);
    shared.live.fetch_sub(1, Ordering::SeqCst);
}

/// Forwards one direction until EOF, error or teardown. `to_client` marks
/// the server → client direction, the one `cut_after` applies to.
async fn pump(
    shared: &Shared,
    link: &Link,
    mut src: OwnedReadHalf,
    mut dst: OwnedWriteHalf,
    to_client: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let reader = async move {
        let mut closed = link.closed.subscribe();
        let mut buf = vec![0u8; CHUNK];
        loop {
            tokio::select! {
                read = src.read(&mut buf) => match read {
                    Ok(n) if n > 0 => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                    _ => {
                        // EOF or error: the writer half-closes after the
                        // queued bytes, unless the link is blackholed (they
                        // would never go): then tear it all down.
                        if *link.blackholed.borrow() {
                            link.close();
                        }
                        return;
                    }
                },
                _ = until(&mut closed, true) => return,
            }
        }
    };
    let writer = async move {
        let mut closed = link.closed.subscribe();
        let mut blackholed = link.blackholed.subscribe();
        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                _ = until(&mut closed, true) => return,
            };
            let Some(mut chunk) = next else {
                // The source ended and everything queued went out.
                let _ = dst.shutdown().await;
                return;
            };
            tokio::select! {
                _ = until(&mut blackholed, false) => {}
                _ = until(&mut closed, true) => return,
            }
            let latency = Duration::from_nanos(shared.latency_nanos.load(Ordering::SeqCst));
            if !latency.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(latency) => {}
                    _ = until(&mut closed, true) => return,
                }
            }
            let mut cut = false;
            if to_client {
                let mut budget = link.cut_budget.lock().expect("cut budget");
                if let Some(left) = budget.as_mut() {
                    if chunk.len() >= *left {
                        chunk.truncate(*left);
                        cut = true;
                    } else {
                        *left -= chunk.len();
                    }
                }
            }
            let written = tokio::select! {
                w = dst.write_all(&chunk) => w.is_ok(),
                _ = until(&mut closed, true) => return,
            };
            if to_client && written {
                shared
                    .to_client
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            if cut {
                let _ = dst.flush().await;
                shared.cuts.fetch_add(1, Ordering::SeqCst);
                link.close();
                return;
            }
            if !written {
                link.close();
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
