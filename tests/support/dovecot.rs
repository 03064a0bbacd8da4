//! A real Dovecot 2.3 for emap's integration tests, started once per test
//! binary on 127.0.0.1 in a temporary directory and shared by its tests.
//!
//! # Lifetime
//! [`dovecot()`] starts the server on first use. Dovecot runs in the
//! foreground (`dovecot -F`) under a small `sh` watchdog that leads a new
//! process group (Dovecot and all its children stay in it). The watchdog
//! blocks reading a pipe whose write end only the test process holds; when
//! that process exits — normally, by panic or by SIGKILL — the kernel
//! closes the pipe, and the watchdog sends SIGTERM to the whole group
//! (Dovecot is gone within milliseconds; SIGTERM to the master alone takes
//! it 1-3 s), reaps the master and removes the temporary directory.
//! Ctrl-C on the terminal does not reach that group, so it cannot orphan
//! Dovecot. Ports are free ports picked at start (bind `127.0.0.1:0`,
//! release); a start that loses a port race is retried with fresh ports
//! and a fresh directory, so concurrently running test binaries do not
//! collide.
//!
//! # Configuration that matters (and why)
//! - Runs as root with `default_internal_user = dovecot`,
//!   `default_login_user = dovenull`; mail processes run as the system user
//!   `emaptest` (created with `useradd --system` when missing), with
//!   `first_valid_uid/gid` lowered to it. The temp dir is made 0755 and the
//!   `mail/` and `home/` dirs are owned by that user: without this LMTP
//!   fails with `mkdir(...) failed: Permission denied`. Not as root, every
//!   Dovecot process runs as the current user and chroots are turned off
//!   (checked as `nobody`).
//! - Users live in **one file per user**: passdb `passwd-file`
//!   `<dir>/passdb/%u`, userdb `passwd-file` `<dir>/userdb/%u`.
//!   Dovecot re-stats a passwd-file at most once per second, so users
//!   appended to a single shared file are not seen for up to a second
//!   (observed: fresh users failed to log in right after being added).
//!   A new per-user file is read on its first lookup: users can log in
//!   immediately. Passwords use the `{PLAIN}` scheme. A userdb line must
//!   keep its uid/gid columns (`name::uid:gid::home::`): a bare `name:pw`
//!   line makes the userdb lookup fail ("user not found from any
//!   userdbs").
//! - Catch-all: a second userdb, `passwd-file` `<dir>/domains/%d.passwd`
//!   with `username_format=%d`, is consulted when the first one does not
//!   know the recipient. Its line `<domain>::uid:gid::home::userdb_user=<u>`
//!   renames the recipient to user `<u>` (`userdb_` prefix needed: a bare
//!   `user=` extra field is a passdb field and is ignored), so LMTP mail to
//!   `anything@<domain>` lands in `<u>`'s INBOX while `Delivered-To:` keeps
//!   the original recipient (`lmtp_hdr_delivery_address = final`, the
//!   default). [`CATCHALL_DOMAIN`] belongs to [`Dovecot::catchall_user`];
//!   [`Dovecot::catchall`] makes a private domain per test.
//! - `auth_failure_delay = 0` and no `anvil-auth-penalty` socket
//!   (`mode = 0`): otherwise every failed login from 127.0.0.1 makes the
//!   next ones wait 2, 4, 8, up to 15 s (observed: a third wrong password
//!   on one connection took > 5 s), which would slow and couple unrelated
//!   tests. Failed logins still answer after up to ~0.5 s (Dovecot flushes
//!   failures on a 500 ms timer).
//! - OAuth2: `auth_mechanisms` adds `xoauth2 oauthbearer`, served by a
//!   second passdb, `driver = oauth2` (`mechanisms = xoauth2 oauthbearer`;
//!   the passwd-file passdb is limited to `plain login`, so a token is
//!   never compared with a password), which asks the test process's own
//!   authorization server ([`OAuthServer`], `introspection_mode = auth`,
//!   `active_attribute = active`) whether a token is live. Tokens come
//!   from [`Dovecot::oauth`]. No auth cache, so a revoked token fails at
//!   its next use.
//! - `disable_plaintext_auth = no`, `auth_mechanisms = plain login`,
//!   `ssl = yes` with a leaf certificate signed by a test CA made with the
//!   openssl CLI (CA: `CA:TRUE`, `keyCertSign`; leaf: `CA:FALSE`,
//!   `serverAuth`, SAN `IP:127.0.0.1, DNS:localhost` — rustls rejects a
//!   CA certificate used as a server certificate).
//! - `namespace inbox { separator = / }`: Maildir's default separator is
//!   `.`, which refuses `CREATE Archive/2024`. In it, `mailbox Junk {
//!   special_use = \Junk }` and the same for `"Courrier indésirable"`
//!   ([`LOCALIZED_JUNK_MAILBOX`]); not `auto`: a user has no Junk until a
//!   test creates one (e.g. [`Dovecot::create_junk`]), so a user without
//!   one shows a server without the special-use folder.
//! - `protocol imap { mail_max_userip_connections = 15 }`; `auth_verbose =
//!   yes` (needed for the failure lines counted below); logs go to
//!   `<dir>/dovecot.log`.
//!
//! # Passwords
//! passwd-file splits lines on `:` and files on newlines, so passwords may
//! not contain `:`, CR, LF or NUL ([`Dovecot::user_with_password`] panics on
//! them). Spaces (leading and trailing too), `"`, `\`, `{`, `#` and
//! non-ASCII UTF-8 are fine. User names are lowercased, because Dovecot's
//! default `auth_username_format = %Lu` lowercases login names.
//!
//! # Log formats used for counting (verified against 2.3.19)
//! - successful login (imap-login):
//!   `imap-login: Info: Login: user=<NAME>, method=PLAIN, rip=127.0.0.1, ...`
//! - wrong password (auth, with `auth_verbose`):
//!   `auth: Info: passwd-file(NAME,127.0.0.1,<SESSION>): Password mismatch`
//! - unknown user (auth): `auth: Info: missing passwd file: <dir>/passdb/NAME`
//!   (only passdb lookups, i.e. logins, read `passdb/`; LMTP's userdb
//!   lookups read `userdb/` and are not counted).
//!
//! A failed login is logged once per attempt (also several attempts on one
//! connection), while imap-login's own `Disconnected (auth failed, N
//! attempts ...)` line only appears at disconnect, so it is not used.
//! Lines reach the file through Dovecot's log process, asynchronously, at
//! about the time the client gets its answer: to assert a count, use
//! [`Dovecot::wait_login_attempts`] (at least n) or
//! [`Dovecot::settled_login_attempts`] (exactly, once quiet) rather than a
//! single snapshot. Pass the lowercased name (as in [`TestUser::name`]):
//! the log shows names after Dovecot lowercased them.
//!
//! # Connections
//! [`Dovecot::connections`] runs `doveadm who -1` (one line per
//! connection: `username proto pid ip`) and counts the lines with this
//! user and proto `imap`. Only logged-in connections count: a connection
//! still in imap-login (before LOGIN) is not a user connection yet.
//! Disconnects are seen by the server asynchronously: await a value with
//! [`Dovecot::wait_connections`].

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::lmtp;
use super::oauth::OAuthServer;
use super::raw_imap::{RawImap, is_ok, quoted};

/// The catch-all domain created at start: mail to `anything@catchall.test`
/// lands in [`Dovecot::catchall_user`]'s INBOX.
pub const CATCHALL_DOMAIN: &str = "catchall.test";

/// Envelope sender used by [`Dovecot::deliver`] (shows in `Return-Path`).
pub const DEFAULT_FROM: &str = "sender@emap.test";

/// The mailbox the configuration marks `\Junk` (RFC 6154) in every user's
/// namespace; it exists only once created ([`Dovecot::create_junk`]).
pub const JUNK_MAILBOX: &str = "Junk";

/// A second mailbox the configuration marks `\Junk`, with a French name
/// ("Courrier indésirable"), as its modified UTF-7 form on the wire: a user
/// who creates this one and not [`JUNK_MAILBOX`] has a localized Junk.
pub const LOCALIZED_JUNK_MAILBOX: &str = "Courrier ind&AOk-sirable";

/// How long Dovecot may take to listen before the start is declared failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a helper command (openssl, doveadm, useradd) may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The system user that owns the mail when the tests run as root.
pub const MAIL_USER: &str = "emaptest";

const INSTALL_HINT: &str = "the emap integration tests need a real Dovecot \
    (dovecot-imapd + dovecot-lmtpd) and the openssl CLI: install them with \
    `apt-get install -y dovecot-imapd dovecot-lmtpd openssl` (as root), or run \
    `scripts/test`, which installs them when missing";

/// The watchdog every server harness runs its server under (`sh -c`, see
/// [`watchdog_command`]): runs `"$@"` in the background with its output in
/// `$WD_OUT`, blocks reading stdin — whose write end only the test process
/// holds — and, at EOF (the test process exited, however), SIGTERMs its own
/// process group, reaps the server and removes `$WD_DIR`. The `:` trap
/// keeps it alive through its own SIGTERM.
pub const WATCHDOG: &str = r#"
trap '' INT HUP
trap ':' TERM
"$@" >"$WD_OUT" 2>&1 </dev/null &
d=$!
read -r _line || :
kill -TERM 0 2>/dev/null
wait "$d"
i=0
while [ -e "$WD_DIR" ] && [ "$i" -lt 100 ]; do
  rm -rf "$WD_DIR" 2>/dev/null || sleep 0.1
  i=$((i + 1))
done
"#;

/// `sh -c WATCHDOG` leading a new process group (Ctrl-C on the terminal,
/// sent to the foreground group, does not reach it or the server), with
/// the server's output going to `out` and `dir` removed at the end; the
/// caller appends the server's program and arguments and spawns it.
pub fn watchdog_command(name: &str, out: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG)
        .arg(name)
        .env("WD_OUT", out)
        .env("WD_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    cmd
}

/// The per-user-and-IP IMAP connection cap of the suite's Dovecot
/// (`mail_max_userip_connections`).
pub const MAX_USERIP_CONNECTIONS: usize = 15;

static DOVECOT: OnceLock<Result<Dovecot, String>> = OnceLock::new();
static USER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The Dovecot of this test binary, started on first call (from any
/// thread) and shared afterwards. Panics — never skips — if it cannot be
/// started, with the reason (missing packages: how to install them; a
/// failed start: the end of Dovecot's log).
pub fn dovecot() -> &'static Dovecot {
    super::trace::install();
    match DOVECOT.get_or_init(|| Dovecot::start(MAX_USERIP_CONNECTIONS)) {
        Ok(dovecot) => dovecot,
        Err(e) => panic!("test Dovecot unavailable: {e}"),
    }
}

/// A mail account on the test server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestUser {
    /// Login name, also a valid LMTP recipient (`Delivered-To: <name>`).
    pub name: String,
    /// Plaintext password.
    pub password: String,
}

/// A private catch-all domain: mail to any `local@domain` goes to `user`.
#[derive(Clone, Debug)]
pub struct CatchAll {
    /// The domain, e.g. `task-1234-7.catchall.test`.
    pub domain: String,
    /// The account whose INBOX receives the domain's mail.
    pub user: TestUser,
}

impl CatchAll {
    /// `local@domain`.
    pub fn address(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }
}

/// A running Dovecot (see the module docs for its configuration).
pub struct Dovecot {
    /// Plaintext IMAP (STARTTLS offered) on 127.0.0.1.
    pub imap_port: u16,
    /// Implicit-TLS IMAP on 127.0.0.1.
    pub imaps_port: u16,
    /// LMTP on 127.0.0.1.
    pub lmtp_port: u16,
    /// The test CA certificate (PEM) that signed the server certificate.
    pub ca_pem: Vec<u8>,
    /// Path of the same CA certificate.
    pub ca_path: PathBuf,
    dir: PathBuf,
    conf_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    doveadm: PathBuf,
    openssl: PathBuf,
    mail_uid: u32,
    mail_gid: u32,
    catchall: CatchAll,
    oauth: OAuthServer,
    /// The watchdog; its stdin pipe (closed only when this process exits)
    /// is what keeps Dovecot alive.
    _watchdog: Mutex<Child>,
}

/// Who runs what, decided once per start.
struct Accounts {
    root: bool,
    internal_user: String,
    internal_group: String,
    login_user: String,
    mail_uid: u32,
    mail_gid: u32,
}

struct Binaries {
    dovecot: PathBuf,
    doveadm: PathBuf,
    openssl: PathBuf,
}

enum StartError {
    /// Lost a port race: worth retrying with other ports.
    PortInUse(String),
    Fatal(String),
}

impl Dovecot {
    /// A Dovecot of its own (not the shared [`dovecot()`]) with this
    /// per-user-and-IP connection cap; stopped when dropped (its watchdog's
    /// pipe closes) or when the process exits. For the benchmark, which
    /// runs with Dovecot's shipped default cap (10).
    pub fn start_with_cap(cap: usize) -> Result<Dovecot, String> {
        Dovecot::start(cap)
    }

    fn start(cap: usize) -> Result<Dovecot, String> {
        let bins = Binaries::find()?;
        let accounts = Accounts::resolve()?;
        let oauth = OAuthServer::start()
            .map_err(|e| format!("starting the OAuth2 introspection endpoint: {e}"))?;
        let mut last = String::new();
        for _attempt in 0..4 {
            match Dovecot::start_once(&bins, &accounts, &oauth, cap) {
                Ok(dovecot) => return Ok(dovecot),
                Err(StartError::PortInUse(e)) => last = e,
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
        Err(format!(
            "Dovecot kept losing port races; last failure:\n{last}"
        ))
    }

    fn start_once(
        bins: &Binaries,
        accounts: &Accounts,
        oauth: &OAuthServer,
        cap: usize,
    ) -> Result<Dovecot, StartError> {
        let fatal = StartError::Fatal;
        let dir = tempfile::Builder::new()
            .prefix("emap-dovecot-")
            .tempdir()
            .map_err(|e| fatal(format!("creating the temp dir: {e}")))?
            .keep();
        // Until the watchdog owns the directory, remove it on failure.
        let mut guard = DirGuard(Some(dir.clone()));
        let p = |sub: &str| dir.join(sub);
        set_mode(&dir, 0o755).map_err(fatal)?;
        for sub in ["tls", "passdb", "userdb", "domains", "state"] {
            fs::create_dir(p(sub)).map_err(|e| fatal(format!("mkdir {sub}: {e}")))?;
            set_mode(&p(sub), 0o755).map_err(fatal)?;
        }
        for sub in ["mail", "home"] {
            fs::create_dir(p(sub)).map_err(|e| fatal(format!("mkdir {sub}: {e}")))?;
            set_mode(&p(sub), 0o755).map_err(fatal)?;
            if accounts.root {
                std::os::unix::fs::chown(p(sub), Some(accounts.mail_uid), Some(accounts.mail_gid))
                    .map_err(|e| fatal(format!("chown {sub}: {e}")))?;
            }
        }
        make_certificates(&bins.openssl, &p("tls")).map_err(fatal)?;
        let ca_path = p("tls/ca.pem");
        let ca_pem = fs::read(&ca_path).map_err(|e| fatal(format!("reading ca.pem: {e}")))?;

        let ports = free_ports(3).map_err(|e| fatal(format!("picking free ports: {e}")))?;
        let (imap_port, imaps_port, lmtp_port) = (ports[0], ports[1], ports[2]);
        let conf_path = p("dovecot.conf");
        let config = render_config(&dir, accounts, imap_port, imaps_port, lmtp_port, cap);
        fs::write(&conf_path, config).map_err(|e| fatal(format!("writing the config: {e}")))?;
        let oauth_conf = format!(
            "introspection_mode = auth\nintrospection_url = {}\nusername_attribute = username\n\
             active_attribute = active\nactive_value = true\n",
            oauth.introspection_url()
        );
        fs::write(p("oauth2.conf"), oauth_conf)
            .map_err(|e| fatal(format!("writing oauth2.conf: {e}")))?;
        let log_path = p("dovecot.log");
        let stderr_path = p("dovecot.stderr");

        // The watchdog leads a new process group (so does Dovecot, its
        // child): Ctrl-C on the terminal, sent to the foreground group, does
        // not reach them, and the watchdog can stop them all at once.
        let watchdog = watchdog_command("emap-dovecot-watchdog", &stderr_path, &dir)
            .arg(&bins.dovecot)
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .spawn();
        let mut watchdog = watchdog.map_err(|e| fatal(format!("spawning the sh watchdog: {e}")))?;
        // The watchdog removes the directory from now on.
        guard.0 = None;

        if let Err(e) = wait_ready(&log_path, &stderr_path, [imap_port, imaps_port, lmtp_port]) {
            stop_watchdog(&mut watchdog);
            return Err(e);
        }

        let dovecot = Dovecot {
            imap_port,
            imaps_port,
            lmtp_port,
            ca_pem,
            ca_path,
            dir,
            conf_path,
            log_path,
            stderr_path,
            doveadm: bins.doveadm.clone(),
            openssl: bins.openssl.clone(),
            mail_uid: accounts.mail_uid,
            mail_gid: accounts.mail_gid,
            oauth: oauth.clone(),
            catchall: CatchAll {
                domain: CATCHALL_DOMAIN.to_string(),
                user: TestUser {
                    name: unique_name("catchall"),
                    password: random_password(),
                },
            },
            _watchdog: Mutex::new(watchdog),
        };
        dovecot.add_user(&dovecot.catchall.user);
        dovecot.add_domain(CATCHALL_DOMAIN, &dovecot.catchall.user);
        Ok(dovecot)
    }

    /// The temporary directory (config, logs, mail, TLS files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generated `dovecot.conf`.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// Dovecot's log file (all services, info level).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The openssl binary found at start (tests may use it for TLS probes).
    pub fn openssl(&self) -> &Path {
        &self.openssl
    }

    /// The uid and gid that own the mail files.
    pub fn mail_owner(&self) -> (u32, u32) {
        (self.mail_uid, self.mail_gid)
    }

    /// The maildir of `user` (`<dir>/mail/<user>`; INBOX's `new/` and `cur/`
    /// are directly inside).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user)
    }

    /// A fresh user `<prefix>-<pid>-<n>` (lowercased) with a random
    /// password, able to log in immediately.
    pub fn user(&self, prefix: &str) -> TestUser {
        self.user_with_password(prefix, &random_password())
    }

    /// A fresh user with the given password. Panics if the password holds
    /// a character passwd-file cannot store (`:`, CR, LF, NUL).
    pub fn user_with_password(&self, prefix: &str, password: &str) -> TestUser {
        assert!(
            !password.contains([':', '\r', '\n', '\0']),
            "passwd-file passwords cannot contain ':', CR, LF or NUL: {password:?}"
        );
        let user = TestUser {
            name: unique_name(prefix),
            password: password.to_string(),
        };
        super::trace::record_secret(&user.name, &user.password);
        self.add_user(&user);
        user
    }

    /// The owner of [`CATCHALL_DOMAIN`] (shared by every test of the
    /// binary: tell your messages apart, e.g. by a unique local part).
    pub fn catchall_user(&self) -> &TestUser {
        &self.catchall.user
    }

    /// A fresh user plus a private catch-all domain delivering to it.
    pub fn catchall(&self, prefix: &str) -> CatchAll {
        let user = self.user(prefix);
        let domain = format!("{}.catchall.test", user.name.replace(['_', '.'], "-"));
        self.add_domain(&domain, &user);
        CatchAll { domain, user }
    }

    /// Adds `user` as given (name and password), able to log in at once.
    pub fn add_user(&self, user: &TestUser) {
        let home = self.dir.join("home").join(&user.name);
        write_atomically(
            &self.dir.join("passdb").join(&user.name),
            format!("{}:{{PLAIN}}{}::::::\n", user.name, user.password).as_bytes(),
        );
        write_atomically(
            &self.dir.join("userdb").join(&user.name),
            format!(
                "{}::{}:{}::{}::\n",
                user.name,
                self.mail_uid,
                self.mail_gid,
                home.display()
            )
            .as_bytes(),
        );
    }

    /// Makes `domain` a catch-all whose mail lands in `owner`'s INBOX.
    pub fn add_domain(&self, domain: &str, owner: &TestUser) {
        let home = self.dir.join("home").join(&owner.name);
        write_atomically(
            &self.dir.join("domains").join(format!("{domain}.passwd")),
            format!(
                "{domain}::{}:{}::{}::userdb_user={}\n",
                self.mail_uid,
                self.mail_gid,
                home.display(),
                owner.name
            )
            .as_bytes(),
        );
    }

    /// Delivers `raw` to `rcpt` (a user name, or an address on a catch-all
    /// domain) over LMTP from [`DEFAULT_FROM`]; panics if refused.
    pub fn deliver(&self, rcpt: &str, raw: &[u8]) {
        self.deliver_from(DEFAULT_FROM, rcpt, raw);
    }

    /// Like [`Dovecot::deliver`] with an explicit envelope sender.
    pub fn deliver_from(&self, from: &str, rcpt: &str, raw: &[u8]) {
        if let Err(e) = self.try_deliver(from, &[rcpt], raw) {
            panic!("{e}\n--- dovecot.log (tail) ---\n{}", self.log_tail(20));
        }
    }

    /// LMTP delivery to several recipients in one transaction.
    pub fn try_deliver(&self, from: &str, rcpts: &[&str], raw: &[u8]) -> Result<(), String> {
        lmtp::deliver(self.lmtp_port, from, rcpts, raw)
    }

    /// [`Dovecot::deliver`] on tokio's blocking pool, for async tests (a
    /// blocking call inside a current-thread runtime would stall the
    /// library's own tasks meanwhile).
    pub async fn deliver_async(&'static self, rcpt: &str, raw: &[u8]) {
        let (rcpt, raw) = (rcpt.to_string(), raw.to_vec());
        super::blocking(move || self.deliver(&rcpt, &raw)).await
    }

    /// APPENDs `raw` to `mailbox` of `user` over IMAP (creating the mailbox
    /// if needed); returns the tagged OK line (with `[APPENDUID ...]`).
    pub fn append(&self, user: &TestUser, mailbox: &str, raw: &[u8]) -> String {
        let mut imap = RawImap::connect(self.imap_port);
        imap.login_ok(&user.name, &user.password);
        if !mailbox.eq_ignore_ascii_case("INBOX") {
            self.create_mailbox_on(&mut imap, mailbox);
        }
        let lines = imap.append(mailbox, raw);
        assert!(is_ok(&lines), "APPEND to {mailbox} failed: {lines:?}");
        imap.logout();
        lines.last().cloned().unwrap_or_default()
    }

    /// Creates [`JUNK_MAILBOX`] for `user`, which the configuration marks
    /// `\Junk` (RFC 6154): its LIST response then carries the attribute.
    /// Deliver into it with [`Dovecot::append`] (`JUNK_MAILBOX`).
    pub fn create_junk(&self, user: &TestUser) {
        self.create_mailbox(user, JUNK_MAILBOX);
    }

    /// Creates `mailbox` for `user` (no error if it exists).
    pub fn create_mailbox(&self, user: &TestUser, mailbox: &str) {
        let mut imap = RawImap::connect(self.imap_port);
        imap.login_ok(&user.name, &user.password);
        self.create_mailbox_on(&mut imap, mailbox);
        imap.logout();
    }

    fn create_mailbox_on(&self, imap: &mut RawImap, mailbox: &str) {
        let name = quoted(mailbox).expect("mailbox name must be 7-bit");
        let lines = imap.command(&format!("CREATE {name}"));
        assert!(
            is_ok(&lines) || lines.last().is_some_and(|l| l.contains("[ALREADYEXISTS]")),
            "CREATE {mailbox} failed: {lines:?}"
        );
    }

    /// The raw messages in `mailbox` of `user`, in sequence order (read
    /// with `BODY.PEEK[]`, so `\Seen` is not set).
    pub fn messages(&self, user: &TestUser, mailbox: &str) -> Vec<Vec<u8>> {
        let mut imap = RawImap::connect(self.imap_port);
        imap.login_ok(&user.name, &user.password);
        let lines = imap.select(mailbox);
        assert!(is_ok(&lines), "SELECT {mailbox} failed: {lines:?}");
        let messages = if RawImap::exists(&lines).unwrap_or(0) == 0 {
            Vec::new()
        } else {
            imap.fetch_all()
        };
        imap.logout();
        messages
    }

    /// Runs `doveadm -c <conf> <args>` (bounded in time) and returns its
    /// output whatever the exit status.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.doveadm);
        cmd.arg("-c").arg(&self.conf_path).args(args);
        run(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("doveadm {args:?}: {e}"))
    }

    /// Logged-in IMAP connections of `user`, as the server counts them
    /// (`doveadm who -1`).
    pub fn connections(&self, user: &str) -> usize {
        let out = self.doveadm(&["who", "-1"]);
        assert!(
            out.status.success(),
            "doveadm who failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        count_who_connections(&String::from_utf8_lossy(&out.stdout), user)
    }

    /// Polls [`Dovecot::connections`] until it equals `expected` or
    /// `timeout` passes; returns the last count seen.
    pub fn wait_connections(&self, user: &str, expected: usize, timeout: Duration) -> usize {
        super::wait_count(timeout, expected, || self.connections(user))
    }

    /// [`Dovecot::wait_connections`] on tokio's blocking pool.
    pub async fn wait_connections_async(
        &'static self,
        user: &str,
        expected: usize,
        timeout: Duration,
    ) -> usize {
        let user = user.to_string();
        super::blocking(move || self.wait_connections(&user, expected, timeout)).await
    }

    /// Disconnects every IMAP connection of `user` (`doveadm kick`); the
    /// clients get `* BYE Server shutting down.` and EOF. Returns whether
    /// anything was kicked.
    pub fn kick(&self, user: &str) -> bool {
        let out = self.doveadm(&["kick", user]);
        // doveadm exits 68 (EX_NOUSER) when the user had no connection.
        match out.status.code() {
            Some(0) => true,
            Some(68) => false,
            _ => panic!(
                "doveadm kick {user} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// The authorization server whose tokens this Dovecot accepts (for
    /// users made with [`Dovecot::user`]).
    pub fn oauth(&self) -> &OAuthServer {
        &self.oauth
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        let mut log = fs::read(&self.log_path).unwrap_or_default();
        if let Ok(stderr) = fs::read(&self.stderr_path) {
            log.extend_from_slice(&stderr);
        }
        String::from_utf8_lossy(&log).into_owned()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// Successful IMAP logins of `user` so far (see the module docs).
    pub fn login_successes(&self, user: &str) -> usize {
        count_successes(&self.log(), user)
    }

    /// Successful IMAP logins of `user` so far over TLS (implicit or after
    /// STARTTLS): Dovecot marks their log line `TLS`.
    pub fn tls_logins(&self, user: &str) -> usize {
        count_successes_where(&self.log(), user, |flag| flag == "TLS")
    }

    /// Successful IMAP logins of `user` so far in plaintext: their log
    /// line has no `TLS` mark (Dovecot marks loopback ones `secured`).
    pub fn plaintext_logins(&self, user: &str) -> usize {
        self.login_successes(user) - self.tls_logins(user)
    }

    /// Polls until `user` has `tls` logins over TLS and `plaintext` logins
    /// in plaintext, or `timeout` passes; returns the last `(tls,
    /// plaintext)` seen. Dovecot's log process writes a login line a moment
    /// after the login itself.
    pub fn wait_logins_by_tls(
        &self,
        user: &str,
        tls: usize,
        plaintext: usize,
        timeout: Duration,
    ) -> (usize, usize) {
        let mut last = (0, 0);
        super::wait_for(timeout, || {
            last = (self.tls_logins(user), self.plaintext_logins(user));
            (last == (tls, plaintext)).then_some(())
        });
        last
    }

    /// Failed IMAP logins (wrong password or unknown user) of `user` so far.
    pub fn login_failures(&self, user: &str) -> usize {
        count_failures(&self.log(), user, &self.dir.join("passdb"))
    }

    /// All IMAP login attempts of `user` so far: successes + failures.
    pub fn login_attempts(&self, user: &str) -> usize {
        let log = self.log();
        count_successes(&log, user) + count_failures(&log, user, &self.dir.join("passdb"))
    }

    /// Polls [`Dovecot::login_attempts`] until it reaches `at_least` or
    /// `timeout` passes; returns the last count.
    pub fn wait_login_attempts(&self, user: &str, at_least: usize, timeout: Duration) -> usize {
        let mut last = 0;
        super::wait_for(timeout, || {
            last = self.login_attempts(user);
            (last >= at_least).then_some(())
        });
        last
    }

    /// Waits until the login attempt count of `user` has not changed for
    /// `quiet` (at most 10 s overall) and returns it: for asserting an exact
    /// count ("one attempt, and no retry") without racing the log.
    pub fn settled_login_attempts(&self, user: &str, quiet: Duration) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.login_attempts(user);
        let mut since = Instant::now();
        while Instant::now() < deadline && since.elapsed() < quiet {
            std::thread::sleep(Duration::from_millis(25));
            let now = self.login_attempts(user);
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        last
    }
}

/// Counts `doveadm who -1` lines (`username proto pid ip`) of `user` with
/// proto `imap`.
pub fn count_who_connections(who_output: &str, user: &str) -> usize {
    who_output
        .lines()
        .skip(1) // header: "username proto pid ip"
        .filter(|line| {
            let mut fields = line.split_whitespace();
            fields.next() == Some(user) && fields.next() == Some("imap")
        })
        .count()
}

fn count_successes(log: &str, user: &str) -> usize {
    let needle = format!("imap-login: Info: Login: user=<{user}>,");
    log.lines().filter(|l| l.contains(&needle)).count()
}

/// Successful logins of `user` whose log line has a comma-separated field
/// for which `flag` holds (`..., mpid=123, TLS, session=<...>`).
fn count_successes_where(log: &str, user: &str, flag: impl Fn(&str) -> bool) -> usize {
    let needle = format!("imap-login: Info: Login: user=<{user}>,");
    log.lines()
        .filter(|l| l.contains(&needle) && l.split(", ").any(|f| flag(f.trim())))
        .count()
}

fn count_failures(log: &str, user: &str, passdb_dir: &Path) -> usize {
    let mismatch = format!("auth: Info: passwd-file({user},");
    let unknown = format!(
        "auth: Info: missing passwd file: {}",
        passdb_dir.join(user).display()
    );
    log.lines()
        .filter(|l| {
            (l.contains(&mismatch) && l.ends_with("): Password mismatch")) || l.ends_with(&unknown)
        })
        .count()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Binaries {
    fn find() -> Result<Binaries, String> {
        let dovecot = find_binary("dovecot").ok_or_else(|| {
            format!("the `dovecot` binary was not found in PATH or /usr/sbin: {INSTALL_HINT}")
        })?;
        let doveadm = find_binary("doveadm")
            .ok_or_else(|| format!("the `doveadm` binary was not found: {INSTALL_HINT}"))?;
        let openssl = find_binary("openssl")
            .ok_or_else(|| format!("the `openssl` binary was not found: {INSTALL_HINT}"))?;
        // Debian puts the LMTP server in its own package (dovecot-lmtpd).
        let lmtp_candidates = ["/usr/lib/dovecot/lmtp", "/usr/libexec/dovecot/lmtp"];
        if !lmtp_candidates.iter().any(|p| Path::new(p).exists()) {
            return Err(format!(
                "Dovecot's LMTP server ({}) is missing: {INSTALL_HINT}",
                lmtp_candidates.join(" or ")
            ));
        }
        Ok(Binaries {
            dovecot,
            doveadm,
            openssl,
        })
    }
}

/// A binary in `PATH` or the usual sbin/bin directories.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/sbin",
                "/usr/bin",
                "/usr/local/sbin",
                "/usr/local/bin",
                "/sbin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Accounts {
    fn resolve() -> Result<Accounts, String> {
        let euid = fs::metadata("/proc/self")
            .map_err(|e| format!("reading /proc/self: {e}"))?
            .uid();
        if euid != 0 {
            // Dovecot as an unprivileged user: everything runs as us.
            let user = id(&["-un"])?;
            let group = id(&["-gn"])?;
            return Ok(Accounts {
                root: false,
                internal_user: user.clone(),
                internal_group: group,
                login_user: user,
                mail_uid: euid,
                mail_gid: id(&["-g"])?.parse().map_err(|e| format!("id -g: {e}"))?,
            });
        }
        for needed in ["dovecot", "dovenull"] {
            if id(&["-u", needed]).is_err() {
                return Err(format!(
                    "the system user `{needed}` (created by the dovecot-core package) is missing: \
                     {INSTALL_HINT}"
                ));
            }
        }
        let (mail_uid, mail_gid) = mail_user_ids()?;
        Ok(Accounts {
            root: true,
            internal_user: "dovecot".into(),
            internal_group: "dovecot".into(),
            login_user: "dovenull".into(),
            mail_uid,
            mail_gid,
        })
    }
}

/// The uid and gid of the system user [`MAIL_USER`] that owns test mail
/// (for Dovecot, Cyrus and Courier alike), created when missing (as root).
pub fn mail_user_ids() -> Result<(u32, u32), String> {
    if id(&["-u", MAIL_USER]).is_err() {
        let mut cmd = Command::new(find_binary("useradd").unwrap_or_else(|| "useradd".into()));
        cmd.args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            MAIL_USER,
        ]);
        // Another test binary may create it at the same time: only the
        // final check below counts.
        let created = run(cmd, COMMAND_TIMEOUT);
        if id(&["-u", MAIL_USER]).is_err() {
            return Err(format!(
                "could not create the system user `{MAIL_USER}` for the test servers' mail \
                 ({created:?}); create it with `useradd --system --user-group {MAIL_USER}`"
            ));
        }
    }
    let number = |args: &[&str]| -> Result<u32, String> {
        id(args)?.parse().map_err(|e| format!("id {args:?}: {e}"))
    };
    Ok((number(&["-u", MAIL_USER])?, number(&["-g", MAIL_USER])?))
}

/// Runs `id <args>` and returns its trimmed output, or an error if it fails.
pub fn id(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("id");
    cmd.args(args);
    let out = run(cmd, COMMAND_TIMEOUT)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "id {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn render_config(
    dir: &Path,
    accounts: &Accounts,
    imap_port: u16,
    imaps_port: u16,
    lmtp_port: u16,
    cap: usize,
) -> String {
    let d = dir.display();
    let Accounts {
        internal_user,
        internal_group,
        login_user,
        mail_uid,
        mail_gid,
        ..
    } = accounts;
    let mut config = format!(
        r#"# Generated by emap's tests/support/dovecot.rs: see its module docs.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
listen = 127.0.0.1
protocols = imap lmtp

default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
mail_uid = {mail_uid}
mail_gid = {mail_gid}
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:{d}/mail/%u
mail_fsync = never
# '/' as hierarchy separator, like most servers (maildir's default is '.').
namespace inbox {{
  inbox = yes
  separator = /
  # RFC 6154: the mailbox named Junk, once created, is listed with \Junk
  # (tests/folders.rs; see JUNK_MAILBOX).
  mailbox Junk {{
    special_use = \Junk
  }}
  # A localized one (UTF-8 here, modified UTF-7 on the wire): see
  # LOCALIZED_JUNK_MAILBOX.
  mailbox "Courrier indésirable" {{
    special_use = \Junk
  }}
}}

ssl = yes
ssl_cert = <{d}/tls/server.pem
ssl_key = <{d}/tls/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_verbose = yes
auth_failure_delay = 0

passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/passdb/%u
}}
# Tokens: asked of the test process's authorization server (oauth.rs).
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/userdb/%u
}}
# Catch-all domains: <dir>/domains/<domain>.passwd renames the recipient.
userdb {{
  driver = passwd-file
  args = username_format=%d {d}/domains/%d.passwd
}}

protocol imap {{
  mail_max_userip_connections = {cap}
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
# No auth penalty: failed logins must not slow down later tests.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"#
    );
    if !accounts.root {
        // chroot needs root.
        config.push_str(
            "service imap-login {\n  chroot =\n}\nservice anvil {\n  chroot =\n}\n\
             service imap-urlauth-login {\n  chroot =\n}\n",
        );
    }
    config
}

/// Generates `ca.pem`/`ca.key` (CA:TRUE, keyCertSign) and `server.pem`/
/// `server.key` (CA:FALSE, serverAuth, SAN IP:127.0.0.1 + DNS:localhost,
/// signed by the CA), all P-256, valid for ten years.
fn make_certificates(openssl: &Path, tls: &Path) -> Result<(), String> {
    let cnf = tls.join("openssl.cnf");
    fs::write(
        &cnf,
        "[req]\n\
         distinguished_name = dn\n\
         prompt = no\n\
         [dn]\n\
         CN = emap test CA\n\
         [v3_ca]\n\
         basicConstraints = critical, CA:TRUE\n\
         keyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [v3_leaf]\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid\n",
    )
    .map_err(|e| format!("writing openssl.cnf: {e}"))?;
    let f = |name: &str| tls.join(name).into_os_string();
    let steps: [Vec<std::ffi::OsString>; 3] = [
        vec![
            "req".into(),
            "-x509".into(),
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:P-256".into(),
            "-nodes".into(),
            "-keyout".into(),
            f("ca.key"),
            "-out".into(),
            f("ca.pem"),
            "-days".into(),
            "3650".into(),
            "-config".into(),
            cnf.clone().into_os_string(),
            "-extensions".into(),
            "v3_ca".into(),
        ],
        vec![
            "req".into(),
            "-new".into(),
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:P-256".into(),
            "-nodes".into(),
            "-keyout".into(),
            f("server.key"),
            "-out".into(),
            f("server.csr"),
            "-subj".into(),
            "/CN=localhost".into(),
        ],
        vec![
            "x509".into(),
            "-req".into(),
            "-in".into(),
            f("server.csr"),
            "-CA".into(),
            f("ca.pem"),
            "-CAkey".into(),
            f("ca.key"),
            "-CAcreateserial".into(),
            "-out".into(),
            f("server.pem"),
            "-days".into(),
            "3650".into(),
            "-extfile".into(),
            cnf.into_os_string(),
            "-extensions".into(),
            "v3_leaf".into(),
        ],
    ];
    for args in steps {
        let mut cmd = Command::new(openssl);
        cmd.args(&args);
        let out = run(cmd, COMMAND_TIMEOUT)?;
        if !out.status.success() {
            return Err(format!(
                "openssl {:?} failed: {}",
                args.first(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Waits until all ports accept connections and IMAP greets; fails early
/// on a `Fatal:` in the log.
fn wait_ready(log: &Path, stderr: &Path, ports: [u16; 3]) -> Result<(), StartError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let read_log = || {
        let mut text = fs::read_to_string(log).unwrap_or_default();
        text.push_str(&fs::read_to_string(stderr).unwrap_or_default());
        text
    };
    loop {
        let text = read_log();
        if text.contains("Fatal:") || (text.contains("Error:") && text.contains("bind(")) {
            let msg = format!("Dovecot failed to start:\n{}", tail(&text, 30));
            return Err(if text.contains("Address already in use") {
                StartError::PortInUse(msg)
            } else {
                StartError::Fatal(msg)
            });
        }
        let all_listen = ports.iter().all(|port| {
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, *port)),
                Duration::from_millis(200),
            )
            .is_ok()
        });
        if all_listen
            && let Ok(imap) = RawImap::try_connect(ports[0])
            && imap.greeting().starts_with("* OK")
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StartError::Fatal(format!(
                "Dovecot did not listen on 127.0.0.1 ports {ports:?} within {START_TIMEOUT:?}; \
                 log:\n{}",
                tail(&read_log(), 30)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Closes the watchdog's stdin (it then stops the server and removes the
/// directory) and waits for it, boundedly.
pub fn stop_watchdog(child: &mut Child) {
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `n` distinct free TCP ports on 127.0.0.1 (held together while picking,
/// then released), none of them handed out before in this process.
///
/// A server some test stops and starts again on its port (the NATS restart
/// test) leaves that port free in between; the kernel may offer it to
/// another test's `bind(0)` then, and two servers would meet on one port
/// (seen: a client connected to the other test's server, which then went
/// away). Ports are therefore never reused within one test process.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut held = Vec::new();
    let mut ports = Vec::with_capacity(n);
    // Bounded: the ephemeral range holds ~28 000 ports and a test process
    // uses a few hundred.
    for _ in 0..n + 1000 {
        if ports.len() == n {
            break;
        }
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = l.local_addr()?.port();
        if !handed.contains(&port) {
            ports.push(port);
        }
        // Held until the end, so that the kernel offers another port next.
        held.push(l);
    }
    if ports.len() < n {
        return Err(io::Error::other("no port left that was not handed out"));
    }
    handed.extend_from_slice(&ports);
    Ok(ports)
}

/// Runs a command with piped output (stdin closed), killing it after
/// `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {name}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("waiting for {name}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

/// Writes a world-readable file via a temporary name + rename, so Dovecot
/// never reads a half-written line.
fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, contents)
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)))
        .and_then(|()| fs::rename(&tmp, path))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `<prefix>-<pid>-<n>`, lowercased; the prefix must be a simple name.
pub fn unique_name(prefix: &str) -> String {
    assert!(
        !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "user prefix must be non-empty ASCII letters, digits, '-', '_' or '.': {prefix:?}"
    );
    let n = USER_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{n}", prefix.to_ascii_lowercase(), std::process::id())
}

/// A fresh random password (`pw-` and 24 hex digits).
pub fn random_password() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(USER_COUNTER.load(Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let a = hasher.finish();
    hasher.write_u64(a);
    format!("pw-{a:016x}{:08x}", hasher.finish() as u32)
}

/// Removes a directory on drop unless disarmed (`.0 = None`).
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Stopping and starting the server in place, for tests of what clients do
/// when it goes away and comes back. They affect every test of the binary
/// that uses the server: a test binary that calls them must keep its other
/// tests out meanwhile (e.g. with a lock they all take).
impl Dovecot {
    /// Stops the server like a crash or a restart would: every Dovecot
    /// process gets SIGTERM at once (SIGKILL if any is still alive after
    /// 10 s), so live connections are closed and new ones refused. The
    /// watchdog stays, and so do the ports, the directory, users and mail,
    /// for [`Dovecot::start_again`]. Returns once nothing listens on the
    /// IMAP port any more.
    pub fn stop(&self) {
        let group = self._watchdog.lock().expect("watchdog lock").id();
        // Every process of the watchdog's group but the watchdog itself:
        // the master, the services it started, and any earlier restart.
        let members = || -> Vec<u32> {
            Dovecot::group_members(group)
                .into_iter()
                .filter(|&pid| pid != group)
                .collect()
        };
        let signal = |sig: &str, pids: &[u32]| {
            if pids.is_empty() {
                return;
            }
            // sh's builtin kill: no dependency on procps.
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "kill \"$@\"", "kill", sig])
                .args(pids.iter().map(u32::to_string));
            // A process may exit between listing and signalling: ignore.
            let _ = run(cmd, COMMAND_TIMEOUT);
        };
        signal("-TERM", &members());
        let gone = super::wait_for(Duration::from_secs(10), || {
            members().is_empty().then_some(())
        });
        if gone.is_none() {
            signal("-KILL", &members());
            let killed = super::wait_for(Duration::from_secs(5), || {
                members().is_empty().then_some(())
            });
            assert!(
                killed.is_some(),
                "Dovecot processes survived SIGKILL: {:?}",
                members()
            );
        }
        // The master is the watchdog's child, unreaped until the watchdog
        // ends: a zombie still answers kill(pid, 0), and a new master would
        // take it for a running Dovecot. Its pid file must go.
        let _ = fs::remove_file(self.dir.join("run").join("master.pid"));
        let closed = super::wait_for(START_TIMEOUT, || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, self.imap_port))
                .is_err()
                .then_some(())
        });
        assert!(
            closed.is_some(),
            "port {} still accepts connections after the stop",
            self.imap_port
        );
    }

    /// Starts the server again after [`Dovecot::stop`], with the same
    /// configuration and ports, in the watchdog's process group (so the
    /// watchdog still stops it when the test process exits). Returns once
    /// IMAP greets and LMTP accepts; panics with the log's end otherwise.
    pub fn start_again(&self) {
        let group = self._watchdog.lock().expect("watchdog lock").id();
        let bins = Binaries::find().unwrap_or_else(|e| panic!("{e}"));
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.stderr_path.display()));
        let errors = output.try_clone().expect("cloning the stderr file");
        let mut master = Command::new(&bins.dovecot)
            .arg("-F")
            .arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .process_group(i32::try_from(group).expect("pid fits in i32"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting Dovecot again: {e}"));
        // Reaped whenever it ends (a later stop, or the watchdog at exit).
        std::thread::spawn(move || master.wait());
        let ready = super::wait_for(START_TIMEOUT, || {
            let lmtp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.lmtp_port)).is_ok();
            let greeted = RawImap::try_connect(self.imap_port)
                .is_ok_and(|imap| imap.greeting().starts_with("* OK"));
            (lmtp && greeted).then_some(())
        });
        assert!(
            ready.is_some(),
            "Dovecot did not come back on port {} within {START_TIMEOUT:?}; log:\n{}",
            self.imap_port,
            self.log_tail(30)
        );
    }

    /// [`Dovecot::stop`], then [`Dovecot::start_again`].
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Live (not zombie) processes whose process group is `group`, from
    /// `/proc/<pid>/stat` (`pid (comm) state ppid pgrp ...`).
    fn group_members(group: u32) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // comm may hold spaces and parentheses: split after the last ')'.
                let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
                let state = fields.next()?;
                let _ppid = fields.next()?;
                let pgrp: u32 = fields.next()?.parse().ok()?;
                (pgrp == group && state != "Z" && state != "X").then_some(pid)
            })
            .collect()
    }
}

/// Helpers for the exactly-once scenarios (`tests/exactly_once.rs`).
impl Dovecot {
    /// Deletes `mailbox` of `user` with `doveadm mailbox delete` (as a
    /// cleanup script or a mailbox rotation would), panicking if doveadm
    /// fails. Dovecot drops the sessions that had it selected.
    pub fn delete_mailbox(&self, user: &TestUser, mailbox: &str) {
        let out = self.doveadm(&["mailbox", "delete", "-u", &user.name, mailbox]);
        assert!(
            out.status.success(),
            "doveadm mailbox delete {mailbox}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
