//! emap's benchmark (issue 5): what sharing one IMAP connection per inbox
//! among many subscribers costs and saves, measured against a real server
//! that the benchmark starts itself (Dovecot 2.3, Cyrus 3.6, Courier 5.0)
//! or an existing one.
//!
//! ```text
//! cargo run --release --example bench -- [SCENARIOS] [--server dovecot|cyrus|courier]
//!     [--host H --port P --user U --password-env VAR] [--json] [--quick]
//!     [--minutes M] [--rate R] [--messages M] [--n 100,2000] [--k 1,5] [--seed S]
//!     [--svg DIR]
//! ```
//!
//! SCENARIOS is `all` (default) or a comma-separated list of `fanout`,
//! `limit`, `backlog`, `pertask`, `soak`, `burst`, `subscribe`; see
//! BENCHMARKS.md for what each measures and the results. Without
//! `--server`, `limit` runs
//! on Cyrus and on Dovecot, the others on Dovecot; `--server courier`
//! (the test suite's Courier, which needs root: see
//! tests/support/courier.rs) is for `limit` above all (`backlog` and
//! `pertask` answer with a note there). Output: a table per
//! scenario on stdout (progress on stderr), or with `--json` one JSON
//! object per result line. Exit status 1 if a scenario failed or emap lost mail
//! (the per-task client it is compared with may lose some: that is reported).
//! `--svg DIR` also draws the pictures (see plot.rs); the environment
//! variable `BENCH_CHILD_WRAP` runs each client child under a command such
//! as `valgrind --tool=callgrind` (see child.rs).
//!
//! Every client under test runs in a child process of this program (see
//! child.rs), so its CPU time and RSS are its own. All traffic stays on
//! 127.0.0.1 (or the `--host` given); every loop is bounded in count and
//! time.

mod child;
mod client_emap;
mod deliver;
mod metrics;
mod plot;
mod raw_client;
mod report;
mod scenarios;
mod server;
// The servers (Dovecot, Cyrus, Courier), their process plumbing and the raw IMAP
// client are the integration tests' own: one copy, in tests/support.
#[path = "../../tests/support/mod.rs"]
mod support;
mod typical;

use std::time::Instant;

use report::Row;
use scenarios::Opts;
use server::{External, Kind, Server};

const SCENARIOS: [&str; 7] = [
    "fanout",
    "limit",
    "backlog",
    "pertask",
    "soak",
    "burst",
    "subscribe",
];

const USAGE: &str = "usage: bench [all|fanout,limit,backlog,pertask,soak,burst,subscribe] \
    [--server dovecot|cyrus|courier] [--host H --port P --user U --password-env VAR] [--json] [--quick] \
    [--minutes M] [--rate R] [--messages M] [--n 100,2000] [--k 1,5] [--seed S] [--svg DIR]";

struct Cli {
    scenarios: Vec<String>,
    server: Option<Kind>,
    external: Option<External>,
    json: bool,
    opts: Opts,
}

fn parse_list(v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("not a number: {x}")))
        .collect()
}

fn parse_cli(args: &[String]) -> Result<Cli, String> {
    let mut cli = Cli {
        scenarios: Vec::new(),
        server: None,
        external: None,
        json: false,
        opts: Opts {
            quick: false,
            rate: None,
            messages: None,
            minutes: None,
            seed: 0x00e3_a9b0,
            fanout_n: None,
            fanout_k: None,
            svg: String::new(),
        },
    };
    let (mut host, mut port, mut user, mut password_env) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--json" => cli.json = true,
            "--quick" => cli.opts.quick = true,
            "--server" => {
                cli.server = Some(match value(a)?.as_str() {
                    "dovecot" => Kind::Dovecot,
                    "cyrus" => Kind::Cyrus,
                    "courier" => Kind::Courier,
                    other => return Err(format!("unknown server {other}")),
                })
            }
            "--host" => host = Some(value(a)?),
            "--port" => port = Some(value(a)?.parse().map_err(|_| "--port: a number")?),
            "--user" => user = Some(value(a)?),
            "--password-env" => password_env = Some(value(a)?),
            "--minutes" => cli.opts.minutes = Some(value(a)?.parse().map_err(|_| "--minutes")?),
            "--rate" => cli.opts.rate = Some(value(a)?.parse().map_err(|_| "--rate")?),
            "--messages" => cli.opts.messages = Some(value(a)?.parse().map_err(|_| "--messages")?),
            "--seed" => cli.opts.seed = value(a)?.parse().map_err(|_| "--seed")?,
            "--n" => cli.opts.fanout_n = Some(parse_list(&value(a)?)?),
            "--k" => cli.opts.fanout_k = Some(parse_list(&value(a)?)?),
            "--svg" => cli.opts.svg = value(a)?,
            "-h" | "--help" => return Err(USAGE.into()),
            s if !s.starts_with('-') => {
                for name in s.split(',') {
                    if name == "all" {
                        cli.scenarios.extend(SCENARIOS.map(str::to_owned));
                    } else if SCENARIOS.contains(&name) {
                        cli.scenarios.push(name.to_owned());
                    } else {
                        return Err(format!("unknown scenario {name}\n{USAGE}"));
                    }
                }
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if cli.scenarios.is_empty() {
        cli.scenarios = SCENARIOS.map(str::to_owned).to_vec();
    }
    if let Some(host) = host {
        let user = user.ok_or("--host needs --user")?;
        let var = password_env.ok_or("--host needs --password-env VAR")?;
        let password = std::env::var(&var).map_err(|_| format!("the variable {var} is not set"))?;
        cli.external = Some(External {
            host,
            port: port.unwrap_or(143),
            user,
            password,
        });
    }
    Ok(cli)
}

/// The servers started so far (each at most once per run).
struct Servers {
    started: Vec<Server>,
    external: Option<External>,
}

impl Servers {
    fn get(&mut self, kind: Kind) -> Result<&mut Server, String> {
        if let Some(i) = self.started.iter().position(|s| s.kind == kind) {
            return Ok(&mut self.started[i]);
        }
        eprintln!("bench: starting {}", kind.name());
        let s = Server::start(kind, self.external.clone())?;
        self.started.push(s);
        Ok(self.started.last_mut().expect("just pushed"))
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!(
        "{cores} cores, {:.1} GiB, emap {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        env!("CARGO_PKG_VERSION")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        let mode = args.get(1).cloned().unwrap_or_default();
        let a = child::Args::parse(&args[2.min(args.len())..]);
        match mode.as_str() {
            "emap" => client_emap::run(&a),
            "backlog-emap" => client_emap::backlog(&a),
            "subscribe-emap" => client_emap::subscribe(&a),
            "backlog-typical" => typical::backlog(&a),
            "pertask" => typical::pertask(&a),
            other => child::say(&format!("error unknown mode {other}")),
        }
        return;
    }
    let cli = match parse_cli(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    eprintln!("bench: {}", machine());
    let mut servers = Servers {
        started: Vec::new(),
        external: cli.external.clone(),
    };
    let mut failed = false;
    for name in &cli.scenarios {
        let kinds: Vec<Kind> = match (&cli.external, cli.server) {
            (Some(_), _) => vec![Kind::External],
            (None, Some(k)) => vec![k],
            (None, None) if name == "limit" => vec![Kind::Cyrus, Kind::Dovecot],
            (None, None) => vec![Kind::Dovecot],
        };
        let mut rows: Vec<Row> = Vec::new();
        for kind in kinds {
            let t = Instant::now();
            let result = servers.get(kind).and_then(|server| {
                let o = &cli.opts;
                match name.as_str() {
                    "fanout" => scenarios::fanout(server, o),
                    "limit" => scenarios::limit(server, o),
                    "backlog" => scenarios::backlog(server, o),
                    "pertask" => scenarios::pertask(server, o),
                    "soak" => scenarios::soak(server, o),
                    "burst" => scenarios::burst(server, o),
                    "subscribe" => scenarios::subscribe(server, o),
                    _ => Err(format!("unknown scenario {name}")),
                }
            });
            match result {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    eprintln!("bench: {name} on {} failed: {e}", kind.name());
                    failed = true;
                    rows.push(Row::new(name).with("server", kind.name()).with("error", e));
                }
            }
            eprintln!(
                "bench: {name} on {} took {:.0} s",
                kind.name(),
                t.elapsed().as_secs_f64()
            );
        }
        // Mail lost by emap fails the run; the typical per-task client it
        // is compared with may lose mail (that is part of what the
        // benchmark shows), which is reported in its row, not a failure.
        let compared = |r: &report::Row| matches!(r.get("client"), Some(report::Value::Str(c)) if c.starts_with("per-task"));
        if rows
            .iter()
            .any(|r| !compared(r) && matches!(r.get("lost"), Some(report::Value::Int(l)) if *l > 0))
        {
            failed = true;
        }
        if cli.json {
            for r in &rows {
                println!("{}", r.to_json());
            }
        } else {
            println!("\n## {name}\n");
            print!("{}", report::table(&rows));
        }
    }
    for s in servers.started.drain(..) {
        s.stop();
    }
    eprintln!(
        "bench: done in {:.0} s (parent peak RSS {} KiB)",
        started.elapsed().as_secs_f64(),
        scenarios::parent_rss()
    );
    if failed {
        std::process::exit(1);
    }
}
