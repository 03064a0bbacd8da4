//! The benchmark's own Cyrus IMAP 3.6, run from an unpacked Debian package
//! (examples/bench/setup-cyrus.sh: Debian's cyrus-imapd conflicts with
//! Dovecot's packages, so it is unpacked, not installed).
//!
//! Cyrus is the latency reference: it pushes IDLE notifications at once
//! through its `idled` daemon, while Dovecot delays them by ~0.5 s by
//! design. Layout in a temporary directory:
//! - `imapd.conf`: config, spool and socket dirs inside the temp dir;
//!   `cyrus_user` is the mail owner (root starts `master`, which drops to
//!   it); passwords in a private sasldb (`saslpasswd2 -f`); plain LOGIN and
//!   AUTHENTICATE PLAIN allowed (loopback only); `maxlogins_per_user` set
//!   like Dovecot's cap so the per-task scenario means the same on both.
//! - `cyrus.conf`: `idled` started with the master, `imapd` on a free
//!   127.0.0.1 port, `lmtpd` on a Unix socket (pre-authenticated, so
//!   delivery needs no SASL), no other service.
//!
//! Mailboxes are created by the admin (`CREATE user/<name>`, with
//! `unixhierarchysep`). Cyrus logs only to syslog; nothing here needs it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dovecot::MAX_USERIP_CONNECTIONS;
use crate::imap::Imap;
use crate::proc::{self, Watchdog};

const ADMIN: &str = "cyrusadmin";

pub struct Cyrus {
    pub imap_port: u16,
    pub lmtp_socket: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    admin_password: String,
    watchdog: Watchdog,
}

/// Where setup-cyrus.sh unpacks Cyrus.
pub fn root_dir() -> PathBuf {
    std::env::var_os("EMAP_BENCH_CYRUS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/emap-bench/cyrus"))
}

impl Cyrus {
    pub fn start() -> Result<Cyrus, String> {
        let root = root_dir();
        let bin = root.join("usr/lib/cyrus/bin");
        if !bin.join("master").exists() || !root.join("usr/sbin/saslpasswd2").exists() {
            return Err(format!(
                "Cyrus is not unpacked in {} (run examples/bench/setup-cyrus.sh as root, or set \
                 EMAP_BENCH_CYRUS_ROOT)",
                root.display()
            ));
        }
        let (uid, gid) = proc::mail_owner()?;
        let owner = if proc::is_root() {
            proc::MAIL_USER.to_owned()
        } else {
            proc::id(&["-un"])?
        };
        let dir = proc::temp_dir("emap-bench-cyrus-")?;
        let d = dir.display();
        for sub in ["conf", "conf/socket", "spool", "run"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        let port = proc::free_ports(1)?[0];
        let lmtp_socket = dir.join("run/lmtp");
        let imapd_conf = dir.join("imapd.conf");
        let sasldb = dir.join("sasldb2");
        std::fs::write(
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
                 sasl_sasldb_path: {sasldb}\n\
                 sasl_mech_list: PLAIN LOGIN\n\
                 unixhierarchysep: yes\n\
                 virtdomains: off\n\
                 lmtpsocket: {lmtp}\n\
                 maxlogins_per_user: {MAX_USERIP_CONNECTIONS}\n\
                 syslog_prefix: emap-bench-cyrus\n",
                sasldb = sasldb.display(),
                lmtp = lmtp_socket.display(),
            ),
        )
        .map_err(|e| format!("writing imapd.conf: {e}"))?;
        let b = bin.display();
        let c = imapd_conf.display();
        let cyrus_conf = dir.join("cyrus.conf");
        std::fs::write(
            &cyrus_conf,
            format!(
                "START {{\n  recover cmd=\"{b}/ctl_cyrusdb -C {c} -r\"\n  \
                 idled cmd=\"{b}/idled -C {c}\"\n}}\n\
                 SERVICES {{\n  \
                 imap cmd=\"{b}/imapd -C {c}\" listen=\"127.0.0.1:{port}\" prefork=1 \
                 maxchild=2000\n  \
                 lmtpunix cmd=\"{b}/lmtpd -C {c}\" listen=\"{lmtp}\" prefork=1 maxchild=50\n}}\n\
                 EVENTS {{\n}}\n",
                lmtp = lmtp_socket.display(),
            ),
        )
        .map_err(|e| format!("writing cyrus.conf: {e}"))?;
        let admin_password = format!("admin-{:016x}", crate::metrics::now_ns());
        saslpasswd(&root, &dir, ADMIN, &admin_password)?;
        proc::chown(&dir, uid, gid, true)?;
        let c = Cyrus {
            imap_port: port,
            lmtp_socket,
            root: root.clone(),
            dir: dir.clone(),
            admin_password,
            watchdog: Watchdog::spawn(
                &[
                    bin.join("master").as_os_str(),
                    "-C".as_ref(),
                    imapd_conf.as_os_str(),
                    "-M".as_ref(),
                    cyrus_conf.as_os_str(),
                    "-p".as_ref(),
                    dir.join("run/master.pid").as_os_str(),
                    "-D".as_ref(),
                ],
                &[("LD_LIBRARY_PATH", &lib_path(&root))],
                &dir.join("master.out"),
                &dir,
            )?,
        };
        c.wait_ready()?;
        Ok(c)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Imap::connect("127.0.0.1", self.imap_port)
                .is_ok_and(|c| c.greeting.starts_with("* OK"))
                && self.lmtp_socket.exists();
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Cyrus did not listen within 30 s: {}",
                    proc::tail_of(&self.dir.join("master.out"), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A user with a password and an empty INBOX.
    pub fn add_user(&self, name: &str, password: &str) -> Result<(), String> {
        saslpasswd(&self.root, &self.dir, name, password)?;
        let mut admin = Imap::connect("127.0.0.1", self.imap_port)
            .map_err(|e| format!("Cyrus admin connect: {e}"))?;
        admin
            .login(ADMIN, &self.admin_password)
            .map_err(|e| format!("Cyrus admin login: {e}"))?;
        let r = admin
            .command(&format!("CREATE user/{name}"))
            .map_err(|e| format!("CREATE user/{name}: {e}"))?;
        if !r.last().is_some_and(|l| l.contains(" OK")) {
            return Err(format!("CREATE user/{name}: {r:?}"));
        }
        let _ = admin.command("LOGOUT");
        Ok(())
    }

    /// IMAP connections the server holds (server-side established sockets
    /// on its port: Cyrus has no `who`).
    pub fn connections(&self) -> usize {
        proc::established_on_port(self.imap_port)
    }

    pub fn stop(&mut self) {
        self.watchdog.stop();
    }
}

fn lib_path(root: &Path) -> OsString {
    root.join("usr/lib/x86_64-linux-gnu").into_os_string()
}

/// Adds `user` to the private sasldb (created on first use).
fn saslpasswd(root: &Path, dir: &Path, user: &str, password: &str) -> Result<(), String> {
    use std::io::Write;
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => break,
            Ok(Some(s)) => return Err(format!("saslpasswd2 {user}: {s}")),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("saslpasswd2 {user} timed out"));
            }
        }
    }
    let (uid, gid) = proc::mail_owner()?;
    proc::chown(&sasldb, uid, gid, false)
}
