//! The emap side of the benchmark, run in a child process (see child.rs):
//! N subscribers over K inboxes, each a tokio task awaiting its
//! `Subscription` the way an application task would, recording when each
//! benchmark message reached it.
//!
//! Modes:
//! - `emap`: fan-out, limit, burst and soak (with `--churn-pool`, a part of
//!   the subscribers is closed and replaced continuously while RSS is
//!   sampled);
//! - `backlog-emap`: one subscribe on a full mailbox, timed to ready, with
//!   the bytes emap read (`SessionStats::startup_bytes`) and the RSS it
//!   took.
//!
//! RSS points of the `emap` mode (`ready` line): `rss0` once the sessions
//! are connected (one probe subscriber per inbox), `rss1` with the N
//! subscriptions held, `rss2` once each has its receiving task; so
//! `(rss1 - rss0) / N` is emap's own cost per idle subscriber and
//! `(rss2 - rss0) / N` adds the application's task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use emap::{Auth, Config, Credential, Filter, Handle, Registry, Subscription, TlsMode};

use crate::child::{self, Args, say};
use crate::metrics::{self, Rng, cpu_time, now_ns, rss_kb};
use crate::server::Inbox;

/// Concurrent subscribe calls while setting up N subscribers.
const SUBSCRIBE_CONCURRENCY: usize = 64;

/// First receipt time and receipt count per benchmark message.
pub struct Receipts {
    first: Vec<AtomicU64>,
    times: Vec<AtomicU32>,
    distinct: AtomicUsize,
    /// [`Receipts::wait`]'s count: reaching it notifies the waiter (no
    /// polling, so waiting costs the client no CPU).
    target: AtomicUsize,
    reached: tokio::sync::Notify,
}

impl Receipts {
    pub fn new(m: usize) -> Receipts {
        Receipts {
            first: (0..m).map(|_| AtomicU64::new(0)).collect(),
            times: (0..m).map(|_| AtomicU32::new(0)).collect(),
            distinct: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            reached: tokio::sync::Notify::new(),
        }
    }

    pub fn record(&self, seq: u32, at: u64) {
        let i = seq as usize;
        if i >= self.first.len() {
            return;
        }
        if self.times[i].fetch_add(1, Ordering::Relaxed) == 0 {
            self.first[i].store(at, Ordering::Relaxed);
            let now = self.distinct.fetch_add(1, Ordering::AcqRel) + 1;
            if now >= self.target.load(Ordering::Acquire) {
                self.reached.notify_one();
            }
        }
    }

    pub fn distinct(&self) -> usize {
        self.distinct.load(Ordering::Acquire)
    }

    /// Waits until `count` distinct messages arrived or `timeout` passed.
    pub async fn wait(&self, count: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.target.store(count, Ordering::Release);
        while self.distinct() < count {
            if tokio::time::timeout_at(deadline, self.reached.notified())
                .await
                .is_err()
            {
                break;
            }
        }
    }

    /// Prints one `got` line per received message.
    pub fn report(&self) {
        let mut out = String::new();
        for (i, t) in self.times.iter().enumerate() {
            let n = t.load(Ordering::Relaxed);
            if n > 0 {
                out.push_str(&format!(
                    "got {i} {} {n}\n",
                    self.first[i].load(Ordering::Relaxed)
                ));
            }
        }
        if !out.is_empty() {
            say(out.trim_end());
        }
    }
}

pub fn credential(host: &str, port: u16, inbox: &Inbox) -> Credential {
    Credential::new(host, &inbox.user, Auth::password(inbox.password.as_str()))
        .port(port)
        .tls(TlsMode::None)
}

/// `task<i>@<domain of inbox i % K>`: subscriber i's address.
pub fn address(inboxes: &[Inbox], i: usize) -> String {
    inboxes[i % inboxes.len()].address(&format!("task{i}"))
}

async fn receive(mut sub: Subscription, receipts: Arc<Receipts>) {
    while let Some(mail) = sub.recv().await {
        let at = now_ns();
        if let Some(seq) = mail
            .subject()
            .and_then(|s| s.strip_prefix("bench "))
            .and_then(|s| s.trim().parse().ok())
        {
            receipts.record(seq, at);
        }
    }
}

/// Subscribes `indices` (addresses from [`address`]), `SUBSCRIBE_CONCURRENCY`
/// at a time. Returns the subscriptions in index order and the failures.
async fn subscribe_many(
    handle: &Handle,
    creds: &[Credential],
    inboxes: &[Inbox],
    indices: std::ops::Range<usize>,
    capacity: Option<usize>,
) -> (Vec<Option<Subscription>>, usize) {
    let start = indices.start;
    let len = indices.len();
    let mut set = tokio::task::JoinSet::new();
    for lane in 0..SUBSCRIBE_CONCURRENCY.min(len.max(1)) {
        let (handle, creds, inboxes) = (handle.clone(), creds.to_vec(), inboxes.to_vec());
        set.spawn(async move {
            let mut out = Vec::new();
            let mut i = start + lane;
            while i < start + len {
                let filter = Filter::new().to(address(&inboxes, i));
                let cred = creds[i % creds.len()].clone();
                out.push((
                    i,
                    handle.subscribe_with_capacity(cred, filter, capacity).await,
                ));
                i += SUBSCRIBE_CONCURRENCY;
            }
            out
        });
    }
    let mut subs: Vec<Option<Subscription>> = (0..len).map(|_| None).collect();
    let mut failed = 0;
    while let Some(res) = set.join_next().await {
        for (i, r) in res.unwrap_or_default() {
            match r {
                Ok(s) => subs[i - start] = Some(s),
                Err(e) => {
                    if failed == 0 {
                        eprintln!("bench: subscribe failed: {e}");
                    }
                    failed += 1;
                }
            }
        }
    }
    (subs, failed)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The `emap` mode.
pub fn run(args: &Args) {
    runtime().block_on(async {
        if let Err(e) = fanout(args).await {
            say(&format!("error {e}"));
        }
    });
}

async fn fanout(args: &Args) -> Result<(), String> {
    let host = args.str("host");
    let port: u16 = args.num("port", 143);
    let inboxes = child::inboxes(args);
    if inboxes.is_empty() {
        return Err("no inboxes".into());
    }
    let n: usize = args.num("n", 100);
    let m: usize = args.num("m", 1000);
    let capacity: Option<usize> = args.opt("capacity");
    let churn_pool: usize = args.num("churn-pool", 0).min(n);
    let churn_per_sec: usize = args.num("churn-per-sec", 0);
    let sample_secs: u64 = args.num("sample-secs", 10);
    let creds: Vec<Credential> = inboxes.iter().map(|i| credential(&host, port, i)).collect();

    let handle = Registry::start_in_thread(Config::default()).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut probes = Vec::new();
    for (cred, inbox) in creds.iter().zip(&inboxes) {
        let filter = Filter::new().to(inbox.address("probe"));
        probes.push(
            handle
                .subscribe(cred.clone(), filter)
                .await
                .map_err(|e| format!("first subscribe on {}: {e}", inbox.user))?,
        );
    }
    let connect_ms = t.elapsed().as_millis();
    let receipts = Arc::new(Receipts::new(m));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kb();

    let t = Instant::now();
    let (mut subs, failed) = subscribe_many(&handle, &creds, &inboxes, 0..n, capacity).await;
    let subscribe_ms = t.elapsed().as_millis();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kb();

    // Receivers for the stable part; the churn pool is only held.
    let stable = n - churn_pool;
    let pool: Vec<Option<Subscription>> = subs.drain(stable..).collect();
    for sub in subs.into_iter().flatten() {
        tokio::spawn(receive(sub, receipts.clone()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss2 = rss_kb();
    let cpu0 = cpu_time();
    let started = Instant::now();
    say(&format!(
        "ready n={n} failed={failed} connect_ms={connect_ms} subscribe_ms={subscribe_ms} \
         rss0={rss0} rss1={rss1} rss2={rss2} hwm={}",
        metrics::hwm_kb()
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churn_task = (churn_pool > 0 && churn_per_sec > 0).then(|| {
        tokio::spawn(churn(
            handle.clone(),
            creds.clone(),
            inboxes.clone(),
            pool,
            churn_per_sec,
            stop.clone(),
            churned.clone(),
        ))
    });
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        tokio::spawn(async move {
            let mut next = started + Duration::from_secs(sample_secs);
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next.into()).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = started.elapsed().as_secs();
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((t, rss_kb()));
                next += Duration::from_secs(sample_secs);
            }
        })
    };

    let mut commands = child::commands();
    let (count, drain) = loop {
        match commands.recv().await {
            Some(line) => {
                let v: Vec<&str> = line.split_whitespace().collect();
                if let ["expect", c, ms] = v[..] {
                    break (
                        c.parse().unwrap_or(0),
                        Duration::from_millis(ms.parse().unwrap_or(30_000)),
                    );
                }
            }
            None => return Err("the parent went away".into()),
        }
    };
    receipts.wait(count, drain).await;
    let cpu = cpu_time().saturating_sub(cpu0);
    stop.store(true, Ordering::Relaxed);
    sampler.abort();
    if let Some(task) = churn_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    // Unsubscribing is asynchronous: let the churn pool's closes land, so
    // that the actor count shows whether churn leaked subscribers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = handle.stats().await.unwrap_or_default();
    let actors = handle.actors();
    receipts.report();
    for (t, kb) in samples.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        say(&format!("rss {t} {kb}"));
    }
    let sum = |f: fn(&emap::SessionStats) -> u64| stats.iter().map(f).sum::<u64>();
    say(&format!(
        "done cpu_us={} hwm={} rss_end={} received={} fetched={} delivered={} dropped={} \
         reconnects={} sessions={} actor_sessions={} actor_subscribers={} churned={}",
        cpu.as_micros(),
        metrics::hwm_kb(),
        rss_kb(),
        receipts.distinct(),
        sum(|s| s.fetched),
        sum(|s| s.queued),
        sum(|s| s.dropped),
        sum(|s| s.reconnects),
        stats.len(),
        actors.sessions,
        actors.subscribers,
        churned.load(Ordering::Relaxed),
    ));
    drop(probes);
    let _ = tokio::time::timeout(Duration::from_secs(10), handle.shutdown()).await;
    Ok(())
}

/// Closes and replaces `per_sec` random subscriptions of `pool` each
/// second (in 10 steps), each replacement at a fresh address, until
/// `stop`.
async fn churn(
    handle: Handle,
    creds: Vec<Credential>,
    inboxes: Vec<Inbox>,
    mut pool: Vec<Option<Subscription>>,
    per_sec: usize,
    stop: Arc<AtomicBool>,
    churned: Arc<AtomicU64>,
) {
    let mut rng = Rng::new(0x5eed_c4a2);
    let per_tick = per_sec.div_ceil(10).max(1);
    let mut generation = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) && !pool.is_empty() {
        tick.tick().await;
        for _ in 0..per_tick {
            let slot = rng.below(pool.len());
            pool[slot] = None; // dropping closes it
            generation += 1;
            let k = slot % inboxes.len();
            let filter = Filter::new().to(inboxes[k].address(&format!("churn{generation}")));
            if let Ok(s) = handle.subscribe(creds[k].clone(), filter).await {
                pool[slot] = Some(s);
                churned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The `subscribe-emap` mode (goal 3 of issue 14): `--n` subscribes on
/// one inbox from a plain tokio task (the registry on its own thread,
/// `start_in_thread`), made `--how`: `one` (each awaited before the next),
/// `concurrent` (64 in flight) or `batch` (`Handle::subscribe_many`, in
/// batches of `--batch`). Reports the time and the CPU they took.
pub fn subscribe(args: &Args) {
    runtime().block_on(async {
        let host = args.str("host");
        let port: u16 = args.num("port", 143);
        let inboxes = child::inboxes(args);
        if inboxes.is_empty() {
            return say("error no inbox");
        }
        let n: usize = args.num("n", 1000);
        let how = args.str("how");
        let batch: usize = args.num("batch", n).max(1);
        let cred = credential(&host, port, &inboxes[0]);
        let handle = match Registry::start_in_thread(Config::default()) {
            Ok(h) => h,
            Err(e) => return say(&format!("error {e}")),
        };
        // Connected and selected first: what is timed is the subscribes.
        let probe = match handle
            .subscribe(cred.clone(), Filter::new().to(inboxes[0].address("probe")))
            .await
        {
            Ok(p) => p,
            Err(e) => return say(&format!("error first subscribe: {e}")),
        };
        let rss0 = rss_kb();
        let cpu0 = cpu_time();
        let t = Instant::now();
        let (subs, failed) = match how.as_str() {
            "one" => {
                let mut subs = Vec::with_capacity(n);
                let mut failed = 0;
                for i in 0..n {
                    let filter = Filter::new().to(address(&inboxes, i));
                    match handle.subscribe(cred.clone(), filter).await {
                        Ok(s) => subs.push(Some(s)),
                        Err(_) => failed += 1,
                    }
                }
                (subs, failed)
            }
            "batch" => {
                let mut subs = Vec::with_capacity(n);
                let mut failed = 0;
                let mut i = 0;
                while i < n {
                    let end = (i + batch).min(n);
                    let filters = (i..end).map(|j| Filter::new().to(address(&inboxes, j)));
                    match handle.subscribe_many(cred.clone(), filters).await {
                        Ok(s) => subs.extend(s.into_iter().map(Some)),
                        Err(_) => failed += end - i,
                    }
                    i = end;
                }
                (subs, failed)
            }
            _ => subscribe_many(&handle, std::slice::from_ref(&cred), &inboxes, 0..n, None).await,
        };
        let took = t.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        let rss1 = rss_kb();
        let actors = handle.actors();
        say(&format!(
            "done ms={} cpu_us={} failed={failed} held={} actors={} rss0={rss0} rss1={rss1}",
            took.as_millis(),
            cpu.as_micros(),
            subs.iter().flatten().count(),
            actors.subscribers,
        ));
        drop(subs);
        drop(probe);
        let _ = tokio::time::timeout(Duration::from_secs(30), handle.shutdown()).await;
    });
}

/// The `backlog-emap` mode: time one subscribe on a (full) mailbox.
pub fn backlog(args: &Args) {
    runtime().block_on(async {
        let host = args.str("host");
        let port: u16 = args.num("port", 143);
        let inboxes = child::inboxes(args);
        let Some(inbox) = inboxes.first() else {
            say("error no inbox");
            return;
        };
        let handle = match Registry::start_in_thread(Config::default()) {
            Ok(h) => h,
            Err(e) => return say(&format!("error {e}")),
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss0 = rss_kb();
        metrics::reset_hwm();
        let cpu0 = cpu_time();
        let t = Instant::now();
        let sub = handle
            .subscribe(
                credential(&host, port, inbox),
                Filter::new().to("nobody@emap.bench"),
            )
            .await;
        let ready = t.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        let hwm = metrics::hwm_kb();
        let stats = handle.stats().await.unwrap_or_default();
        match sub {
            Ok(_sub) => say(&format!(
                "done ready_us={} bytes={} rss0={rss0} hwm={hwm} cpu_us={}",
                ready.as_micros(),
                stats.first().and_then(|s| s.startup_bytes).unwrap_or(0),
                cpu.as_micros()
            )),
            Err(e) => say(&format!("error subscribe: {e}")),
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), handle.shutdown()).await;
    });
}
