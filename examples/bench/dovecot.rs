//! The benchmark's own Dovecot 2.3: started on 127.0.0.1 in a temporary
//! directory under a watchdog, with per-user passwd files and catch-all
//! domains, LMTP on a TCP port and a realistic per-user connection cap.
//!
//! The settings are those tests/support/dovecot.rs found to work (see its
//! module docs for the pitfalls), minus TLS (plain IMAP on loopback: the
//! raw client and emap are compared on equal terms) and with
//! `mail_max_userip_connections = 10`, Dovecot's shipped default, so the
//! per-task scenario meets the cap a real deployment has.
//!
//! - users: passdb `<dir>/passdb/%u`, userdb `<dir>/userdb/%u`, one file
//!   each (a new file is seen at once; one shared file is re-read at most
//!   once per second);
//! - catch-all: a second userdb `<dir>/domains/%d.passwd` whose line
//!   renames any recipient of the domain to its owner (`userdb_user=`);
//! - `auth_failure_delay = 0` and no auth penalty, so a refused login
//!   does not slow the next ones;
//! - mail processes run as [`MAIL_USER`](crate::proc::MAIL_USER); `mail/`
//!   and `home/` belong to it (else LMTP cannot create the maildir).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::proc::{self, COMMAND_TIMEOUT, Watchdog};

/// How long Dovecot may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The per-user-and-IP IMAP connection cap of the bench's Dovecot.
pub const MAX_USERIP_CONNECTIONS: usize = 10;

pub struct Dovecot {
    pub imap_port: u16,
    pub lmtp_port: u16,
    dir: PathBuf,
    conf: PathBuf,
    doveadm: PathBuf,
    uid: u32,
    gid: u32,
    watchdog: Watchdog,
}

impl Dovecot {
    pub fn start() -> Result<Dovecot, String> {
        let dovecot = proc::find_binary("dovecot").ok_or(
            "dovecot not found: apt-get install -y dovecot-imapd dovecot-lmtpd (or scripts/test)",
        )?;
        let doveadm = proc::find_binary("doveadm").ok_or("doveadm not found")?;
        if !Path::new("/usr/lib/dovecot/lmtp").exists()
            && !Path::new("/usr/libexec/dovecot/lmtp").exists()
        {
            return Err(
                "Dovecot's LMTP server is missing: apt-get install -y dovecot-lmtpd".into(),
            );
        }
        let (uid, gid) = proc::mail_owner()?;
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_once(&dovecot, &doveadm, uid, gid) {
                Ok(d) => return Ok(d),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_once(dovecot: &Path, doveadm: &Path, uid: u32, gid: u32) -> Result<Dovecot, String> {
        let dir = proc::temp_dir("emap-bench-dovecot-")?;
        for sub in ["passdb", "userdb", "domains", "state", "mail", "home"] {
            let p = dir.join(sub);
            std::fs::create_dir(&p).map_err(|e| format!("mkdir {sub}: {e}"))?;
            proc::set_mode(&p, 0o755)?;
            if sub == "mail" || sub == "home" {
                proc::chown(&p, uid, gid, false)?;
            }
        }
        let ports = proc::free_ports(2)?;
        let (imap_port, lmtp_port) = (ports[0], ports[1]);
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, render_config(&dir, uid, gid, imap_port, lmtp_port))
            .map_err(|e| format!("writing dovecot.conf: {e}"))?;
        let out = dir.join("dovecot.stderr");
        let watchdog = Watchdog::spawn(
            &[
                dovecot.as_os_str(),
                "-F".as_ref(),
                "-c".as_ref(),
                conf.as_os_str(),
            ],
            &[],
            &out,
            &dir,
        )?;
        let d = Dovecot {
            imap_port,
            lmtp_port,
            dir,
            conf,
            doveadm: doveadm.to_owned(),
            uid,
            gid,
            watchdog,
        };
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let log = self.dir.join("dovecot.log");
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default()
                + &std::fs::read_to_string(self.dir.join("dovecot.stderr")).unwrap_or_default();
            if text.contains("Fatal:") || text.contains("bind(") {
                return Err(format!(
                    "Dovecot failed to start:\n{}",
                    proc::tail_of(&log, 20)
                ));
            }
            let greets = crate::imap::Imap::connect("127.0.0.1", self.imap_port)
                .is_ok_and(|c| c.greeting.starts_with("* OK"));
            let lmtp = std::net::TcpStream::connect(("127.0.0.1", self.lmtp_port)).is_ok();
            if greets && lmtp {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Dovecot did not listen within {START_TIMEOUT:?}:\n{text}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Adds a user that can log in at once.
    pub fn add_user(&self, name: &str, password: &str) -> Result<(), String> {
        let home = self.dir.join("home").join(name);
        proc::write_atomically(
            &self.dir.join("passdb").join(name),
            format!("{name}:{{PLAIN}}{password}::::::\n").as_bytes(),
        )?;
        proc::write_atomically(
            &self.dir.join("userdb").join(name),
            format!("{name}::{}:{}::{}::\n", self.uid, self.gid, home.display()).as_bytes(),
        )
    }

    /// Makes `domain` a catch-all whose mail lands in `owner`'s INBOX.
    pub fn add_domain(&self, domain: &str, owner: &str) -> Result<(), String> {
        let home = self.dir.join("home").join(owner);
        proc::write_atomically(
            &self.dir.join("domains").join(format!("{domain}.passwd")),
            format!(
                "{domain}::{}:{}::{}::userdb_user={owner}\n",
                self.uid,
                self.gid,
                home.display()
            )
            .as_bytes(),
        )
    }

    /// The maildir of `user` (INBOX's `cur/`, `new/`, `tmp/` inside).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user)
    }

    /// The owner of the mail files.
    pub fn mail_owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// `doveadm -c <conf> <args>`; stdout, or an error with its output.
    pub fn doveadm(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut cmd = Command::new(&self.doveadm);
        cmd.arg("-c").arg(&self.conf).args(args);
        proc::run_ok(cmd, timeout)
    }

    /// Logged-in IMAP connections of these users, as Dovecot counts them
    /// (`doveadm who -1`: one line per connection).
    pub fn connections(&self, users: &[&str]) -> Result<usize, String> {
        let out = self.doveadm(&["who", "-1"], COMMAND_TIMEOUT)?;
        Ok(out
            .lines()
            .skip(1)
            .filter(|l| {
                let mut f = l.split_whitespace();
                let (user, proto) = (f.next(), f.next());
                proto == Some("imap") && user.is_some_and(|u| users.contains(&u))
            })
            .count())
    }

    pub fn stop(&mut self) {
        self.watchdog.stop();
    }
}

fn render_config(dir: &Path, uid: u32, gid: u32, imap_port: u16, lmtp_port: u16) -> String {
    let d = dir.display();
    let root = proc::is_root();
    let (internal, login) = if root {
        ("dovecot".to_owned(), "dovenull".to_owned())
    } else {
        let me = proc::id(&["-un"]).unwrap_or_else(|_| "nobody".into());
        (me.clone(), me)
    };
    let internal_group = if root {
        "dovecot".to_owned()
    } else {
        proc::id(&["-gn"]).unwrap_or_else(|_| "nogroup".into())
    };
    let mut config = format!(
        r#"# Generated by emap's examples/bench (see dovecot.rs there).
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
listen = 127.0.0.1
protocols = imap lmtp
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{d}/mail/%u
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
}}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passdb/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/userdb/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%d {d}/domains/%d.passwd
}}
protocol imap {{
  mail_max_userip_connections = {MAX_USERIP_CONNECTIONS}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"#
    );
    if !root {
        config.push_str(
            "service imap-login {\n  chroot =\n}\nservice anvil {\n  chroot =\n}\n\
             service imap-urlauth-login {\n  chroot =\n}\n",
        );
    }
    config
}
