//! A real Cyrus IMAP 3.6 for emap's end-to-end suite (tests/servers.rs)
//! and the benchmark, started once per test binary on 127.0.0.1 in a
//! temporary directory, from the tree `scripts/setup-cyrus` unpacked
//! (Debian's cyrus-imapd conflicts with dovecot-imapd, so it is unpacked,
//! never installed; `scripts/install-deps` runs the set-up).
//!
//! # Lifetime
//! Like [`dovecot`](super::dovecot): Cyrus' `master` runs in the
//! foreground (`-D`) under a `sh` watchdog that leads a new process group
//! and blocks reading a pipe only this process holds; when the process
//! exits (normally, by panic or SIGKILL) the watchdog sends SIGTERM to the
//! group and removes the temporary directory. [`cyrus()`] starts the
//! shared one; [`Cyrus::start_with_cap`] a private one, stopped on drop.
//!
//! # Configuration that matters (and why)
//! - `imapd.conf`: config, spool, proc and socket directories inside the
//!   temporary directory; `cyrus_user` owns the mail (root starts
//!   `master`, which drops to it: the system user `emaptest`, as for
//!   Dovecot); passwords in a private sasldb (`saslpasswd2 -f`), plain
//!   `LOGIN` and `AUTHENTICATE PLAIN` allowed (loopback only);
//!   `maxlogins_per_user` is the connection cap (15 for the suite, like
//!   Dovecot's); `unixhierarchysep` so folders nest with `/`.
//! - `cyrus.conf`: `idled` started with the master (without it IDLE
//!   degrades to polling), `imapd` on a free 127.0.0.1 port, `lmtpd -a`
//!   (pre-authorised, so delivery needs no SASL) on a free 127.0.0.1 port.
//! - Cyrus logs only to syslog, which nothing here reads: counting logins
//!   from a log is Dovecot-only (the suite counts connections through a
//!   proxy instead).
//!
//! # Users and mailboxes
//! A user is a sasldb entry plus `user/<name>`, created by the admin
//! (`cyrusadmin`) over IMAP; a user creates and deletes its own folders
//! (top-level names: Cyrus 3's `altnamespace`) over IMAP, through
//! [`TestServer`](super::servers::TestServer)'s defaults. [`Cyrus::connections`] and [`Cyrus::kick`]
//! read the per-process files Cyrus keeps in `<configdirectory>/proc/<pid>`
//! (one per imapd serving a client: service, client host, user, mailbox),
//! the equivalent of `doveadm who`; a kick is SIGTERM to those imapd
//! processes.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::dovecot::{
    MAIL_USER, TestUser, find_binary, free_ports, id, mail_user_ids, random_password, run,
    unique_name, watchdog_command,
};
use super::raw_imap::{RawImap, is_ok};
use super::{lmtp, wait_for};

/// The connection cap (`maxlogins_per_user`) of the suite's Cyrus.
pub const MAX_LOGINS_PER_USER: usize = 15;

/// Envelope sender used by [`Cyrus::deliver`].
pub const DEFAULT_FROM: &str = "sender@emap.test";

const ADMIN: &str = "cyrusadmin";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "Cyrus IMAP is unpacked by scripts/setup-cyrus (run as root; \
    scripts/install-deps and scripts/test call it), or set EMAP_CYRUS_ROOT to an unpacked tree";

static CYRUS: OnceLock<Result<Cyrus, String>> = OnceLock::new();

/// The Cyrus of this test binary, started on first call and shared.
/// Panics — never skips — if it cannot start, saying why.
pub fn cyrus() -> &'static Cyrus {
    super::trace::install();
    match CYRUS.get_or_init(|| Cyrus::start_with_cap(MAX_LOGINS_PER_USER)) {
        Ok(c) => c,
        Err(e) => panic!("test Cyrus unavailable: {e}"),
    }
}

/// Where scripts/setup-cyrus unpacks Cyrus: `$EMAP_CYRUS_ROOT`, else
/// `/var/cache/emap/cyrus`.
pub fn root_dir() -> PathBuf {
    std::env::var_os("EMAP_CYRUS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/emap/cyrus"))
}

/// A running Cyrus (see the module docs).
pub struct Cyrus {
    /// Plaintext IMAP on 127.0.0.1.
    pub imap_port: u16,
    /// LMTP (pre-authorised) on 127.0.0.1.
    pub lmtp_port: u16,
    /// The connection cap it was started with.
    pub cap: usize,
    root: PathBuf,
    dir: PathBuf,
    admin_password: String,
    mail_uid: u32,
    mail_gid: u32,
    /// The watchdog; its stdin pipe keeps Cyrus alive.
    watchdog: Mutex<Child>,
}

impl Cyrus {
    /// A Cyrus of its own with `cap` as `maxlogins_per_user`, stopped when
    /// dropped or when the process exits.
    pub fn start_with_cap(cap: usize) -> Result<Cyrus, String> {
        let root = root_dir();
        let bin = root.join("usr/lib/cyrus/bin");
        if !bin.join("master").exists() || !root.join("usr/sbin/saslpasswd2").exists() {
            return Err(format!(
                "Cyrus is not unpacked in {}: {INSTALL_HINT}",
                root.display()
            ));
        }
        let (owner, mail_uid, mail_gid) = mail_owner()?;
        let dir = tempfile::Builder::new()
            .prefix("emap-cyrus-")
            .tempdir()
            .map_err(|e| format!("creating the temp dir: {e}"))?
            .keep();
        let d = dir.display();
        for sub in ["conf", "conf/socket", "spool", "run"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        let ports = free_ports(2).map_err(|e| format!("picking free ports: {e}"))?;
        let (imap_port, lmtp_port) = (ports[0], ports[1]);
        let imapd_conf = dir.join("imapd.conf");
        fs::write(
            &imapd_conf,
            format!(
                "configdirectory: {d}/conf\n\
                 partition-default: {d}/spool\n\
                 defaultpartition: default\n\
                 admins: {ADMIN}\n\
                 cyrus_user: {owner}\n\
                 allowplaintext: yes\n\
                 sasl_pwcheck_method: auxprop\n\
                 sasl_auxprop_plugin: sasldb\n\
                 sasl_sasldb_path: {d}/sasldb2\n\
                 sasl_mech_list: PLAIN LOGIN\n\
                 unixhierarchysep: yes\n\
                 virtdomains: off\n\
                 lmtpsocket: {d}/run/lmtp\n\
                 maxlogins_per_user: {cap}\n\
                 syslog_prefix: emap-cyrus\n"
            ),
        )
        .map_err(|e| format!("writing imapd.conf: {e}"))?;
        let b = bin.display();
        let c = imapd_conf.display();
        let cyrus_conf = dir.join("cyrus.conf");
        fs::write(
            &cyrus_conf,
            format!(
                "START {{\n  recover cmd=\"{b}/ctl_cyrusdb -C {c} -r\"\n  \
                 idled cmd=\"{b}/idled -C {c}\"\n}}\n\
                 SERVICES {{\n  \
                 imap cmd=\"{b}/imapd -C {c}\" listen=\"127.0.0.1:{imap_port}\" prefork=1 \
                 maxchild=2000\n  \
                 lmtp cmd=\"{b}/lmtpd -a -C {c}\" listen=\"127.0.0.1:{lmtp_port}\" prefork=1 \
                 maxchild=50\n}}\n\
                 EVENTS {{\n}}\n"
            ),
        )
        .map_err(|e| format!("writing cyrus.conf: {e}"))?;
        let admin_password = random_password();
        saslpasswd(&root, &dir, ADMIN, &admin_password, (mail_uid, mail_gid))?;
        chown_tree(&dir, mail_uid, mail_gid)?;
        let watchdog = watchdog_command("emap-cyrus-watchdog", &dir.join("master.out"), &dir)
            .arg(bin.join("master"))
            .arg("-C")
            .arg(&imapd_conf)
            .arg("-M")
            .arg(&cyrus_conf)
            .arg("-p")
            .arg(dir.join("run/master.pid"))
            .arg("-D")
            .env("LD_LIBRARY_PATH", lib_path(&root))
            .spawn()
            .map_err(|e| format!("spawning the watchdog: {e}"))?;
        let cyrus = Cyrus {
            imap_port,
            lmtp_port,
            cap,
            root,
            dir,
            admin_password,
            mail_uid,
            mail_gid,
            watchdog: Mutex::new(watchdog),
        };
        cyrus.wait_ready()?;
        Ok(cyrus)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let ready = wait_for(START_TIMEOUT, || {
            let imap = RawImap::try_connect(self.imap_port)
                .is_ok_and(|c| c.greeting().starts_with("* OK"));
            let lmtp = std::net::TcpStream::connect(("127.0.0.1", self.lmtp_port)).is_ok();
            (imap && lmtp).then_some(())
        });
        ready.ok_or_else(|| {
            format!(
                "Cyrus did not listen within {START_TIMEOUT:?}: {}",
                self.output_tail(20)
            )
        })
    }

    /// The temporary directory (config, spool, `proc/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The end of the master's output (Cyrus logs to syslog; this holds
    /// only start-up failures).
    pub fn output_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.dir.join("master.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A fresh user `<prefix>-<pid>-<n>` with a random password and an
    /// empty INBOX; panics if Cyrus refuses.
    pub fn user(&self, prefix: &str) -> TestUser {
        let user = TestUser {
            name: unique_name(prefix),
            password: random_password(),
        };
        super::trace::record_secret(&user.name, &user.password);
        self.add_user(&user.name, &user.password)
            .unwrap_or_else(|e| panic!("{e}"));
        user
    }

    /// A user with this name and password and an empty INBOX.
    pub fn add_user(&self, name: &str, password: &str) -> Result<(), String> {
        saslpasswd(
            &self.root,
            &self.dir,
            name,
            password,
            (self.mail_uid, self.mail_gid),
        )?;
        self.admin(&format!("CREATE user/{name}"))
    }

    /// Runs one command as the admin; fails unless OK.
    fn admin(&self, command: &str) -> Result<(), String> {
        let mut imap = RawImap::try_connect(self.imap_port)
            .map_err(|e| format!("Cyrus admin connect: {e}"))?;
        let login = imap.login(ADMIN, &self.admin_password);
        if !is_ok(&login) {
            return Err(format!("Cyrus admin login: {login:?}"));
        }
        let lines = imap
            .try_command(command)
            .map_err(|e| format!("{command}: {e}"))?;
        imap.logout();
        if is_ok(&lines) {
            Ok(())
        } else {
            Err(format!("{command}: {lines:?}"))
        }
    }

    /// Delivers `raw` to `rcpt` (a user name) over LMTP; panics if refused.
    pub fn deliver(&self, rcpt: &str, raw: &[u8]) {
        lmtp::deliver(self.lmtp_port, DEFAULT_FROM, &[rcpt], raw)
            .unwrap_or_else(|e| panic!("Cyrus LMTP: {e}"));
    }

    /// The pids of the imapd processes serving `user` (from
    /// `<configdirectory>/proc/<pid>`: service, host, user, mailbox).
    fn imapd_pids(&self, user: &str) -> Vec<u32> {
        let Ok(entries) = fs::read_dir(self.dir.join("conf/proc")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let e = e.ok()?;
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let text = fs::read_to_string(e.path()).ok()?;
                let mut fields = text.trim_end().split('\t');
                let service = fields.next()?;
                let _host = fields.next()?;
                let who = fields.next()?;
                let alive = Path::new(&format!("/proc/{pid}")).exists();
                (service == "imap" && who == user && alive).then_some(pid)
            })
            .collect()
    }

    /// Logged-in IMAP connections of `user`, as Cyrus counts them.
    pub fn connections(&self, user: &str) -> usize {
        self.imapd_pids(user).len()
    }

    /// Polls [`Cyrus::connections`] until it equals `expected` or
    /// `timeout` passes; returns the last count seen.
    pub fn wait_connections(&self, user: &str, expected: usize, timeout: Duration) -> usize {
        super::wait_count(timeout, expected, || self.connections(user))
    }

    /// Ends every IMAP connection of `user` (SIGTERM to its imapd
    /// processes); returns whether there was one.
    pub fn kick(&self, user: &str) -> bool {
        let pids = self.imapd_pids(user);
        if pids.is_empty() {
            return false;
        }
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -TERM \"$@\"", "kill"])
            .args(pids.iter().map(u32::to_string));
        let _ = run(cmd, COMMAND_TIMEOUT);
        true
    }

    /// IMAP connections the server holds on its port, all users (the
    /// established sockets, server side, from `/proc/net/tcp`).
    pub fn established(&self) -> usize {
        established_on_port(self.imap_port)
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog stop Cyrus; wait for it,
        // boundedly, so that a benchmark's next server starts on a quiet
        // machine.
        let mut child = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn lib_path(root: &Path) -> OsString {
    root.join("usr/lib/x86_64-linux-gnu").into_os_string()
}

/// The user, uid and gid that own the mail: [`MAIL_USER`] as root
/// (created when missing, as for Dovecot), else the current user.
fn mail_owner() -> Result<(String, u32, u32), String> {
    let num = |args: &[&str]| -> Result<u32, String> {
        id(args)?.parse().map_err(|e| format!("id {args:?}: {e}"))
    };
    if num(&["-u"])? != 0 {
        return Ok((id(&["-un"])?, num(&["-u"])?, num(&["-g"])?));
    }
    let (uid, gid) = mail_user_ids()?;
    Ok((MAIL_USER.to_owned(), uid, gid))
}

/// `chown -R uid:gid dir` when running as root (a no-op otherwise).
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    if id(&["-u"])? != "0" {
        return Ok(());
    }
    let mut cmd = Command::new("chown");
    cmd.arg("-R").arg(format!("{uid}:{gid}")).arg(dir);
    let out = run(cmd, COMMAND_TIMEOUT)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "chown -R {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Adds `user` to the private sasldb (created on first use).
fn saslpasswd(
    root: &Path,
    dir: &Path,
    user: &str,
    password: &str,
    (uid, gid): (u32, u32),
) -> Result<(), String> {
    let sasldb = dir.join("sasldb2");
    let mut child = Command::new(root.join("usr/sbin/saslpasswd2"))
        .arg("-f")
        .arg(&sasldb)
        .args(["-c", "-p", user])
        .env("LD_LIBRARY_PATH", lib_path(root))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("saslpasswd2: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(password.as_bytes());
    }
    let done = wait_for(COMMAND_TIMEOUT, || child.try_wait().ok().flatten());
    match done {
        Some(s) if s.success() => {}
        Some(s) => return Err(format!("saslpasswd2 {user}: {s}")),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("saslpasswd2 {user} timed out"));
        }
    }
    if id(&["-u"])? == "0" {
        std::os::unix::fs::chown(&sasldb, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", sasldb.display()))?;
    }
    Ok(())
}

/// Established TCP connections whose local port is `port`, from
/// `/proc/net/tcp` (IPv4): with a server's port, the connections the
/// server holds, counted on its side.
pub fn established_on_port(port: u16) -> usize {
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local_address rem_address st; 01 = ESTABLISHED
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "01"
        })
        .count()
}
