//! A real Courier IMAP 5.0 for emap's integration tests, started once per
//! test binary on 127.0.0.1 in a temporary directory and shared by its
//! tests — the third server users point emap at, with the most unusual
//! IMAP of the three (no UIDNEXT in SELECT, IDLE through a file monitor,
//! a connection cap per IP that answers with silence).
//!
//! # Where Courier comes from
//! Debian's `courier-imap` conflicts with `dovecot-imapd`, so
//! `scripts/setup-courier` only *unpacks* it into [`root_dir`]
//! (`/var/cache/emap/courier`, or `$EMAP_COURIER_ROOT`) and installs its
//! plain libraries. Its binaries have their paths built in
//! (`/etc/courier/authdaemonrc` and `userdb.dat`, the auth modules in
//! `/usr/lib/courier-authlib`, the authdaemon socket in
//! `/run/courier/authdaemon`), so everything runs in a **private mount
//! namespace** (`unshare -m`) where the temporary directory's `etc/` and
//! `run/` and the unpacked modules are bind-mounted over those paths. That
//! needs root: [`unavailable`] says when the suite must skip (not root),
//! and [`courier()`] panics on any other failure, so CI (root) runs it.
//!
//! # Lifetime
//! A `sh` watchdog, inside the namespace and leading a new process group
//! (Ctrl-C on the terminal does not reach it), starts `authdaemond` and
//! three `couriertcpd` listeners, then blocks reading a pipe whose write
//! end only the test process holds. When that process exits — normally,
//! by panic or by SIGKILL — the pipe closes and the watchdog stops every
//! process of this instance and removes the temporary directory. Courier's
//! processes do not stay in one process group (couriertcpd makes its own,
//! gam_server starts its own session), so an instance is told by an
//! environment variable every one of them inherits: `EMAP_COURIER=<temp
//! dir>`. [`Courier::kick`] and [`Courier::connections`] find processes
//! the same way.
//!
//! # Three listeners, one server
//! All share `authdaemond`, the users and the maildirs:
//! - [`Courier::imap_port`]: the server as a tuned Debian install runs it,
//!   `IMAP_ENHANCEDIDLE=1` with gam_server (gamin, the FAM implementation
//!   Debian's courier-imap depends on): IDLE pushes new mail at once
//!   (`+ entering ENHANCED idle mode`). `-maxperip` is high
//!   ([`MAX_PER_IP`]) so that parallel tests never meet it.
//! - [`Courier::capped_port`]: the same with `-maxperip` =
//!   [`CAPPED_PER_IP`]: a connection beyond the cap is accepted and closed
//!   at once, without a greeting (couriertcpd logs `Maximum connection
//!   limit reached`). The cap counts connections from one IP, logged in or
//!   not, so tests that fill it use this port and keep off the others.
//! - [`Courier::nofam_port`]: Courier **without FAM**: the listener runs in
//!   a nested mount namespace where `/usr/libexec/gam_server` is
//!   `/dev/null`, with its own `GAM_CLIENT_ID` (gamin shares one
//!   gam_server per user and client id through an abstract socket, which a
//!   mount namespace does not hide). Courier then answers LOGIN with
//!   `* OK [ALERT] Filesystem notification initialization error` before
//!   the tagged OK, still offers IDLE (`+ entering idle mode`), and looks
//!   at the maildir only every `IMAP_IDLE_TIMEOUT` seconds while idling
//!   ([`NOFAM_IDLE_TIMEOUT_SECS`] here; Debian's default is 60, and
//!   values below 60 are honoured: observed with 5 and 1).
//!
//! # Users and mail
//! authdaemond uses the `authuserdb` module: [`Courier::user`] appends the
//! account to an in-memory list and rebuilds `etc/userdb.dat` and
//! `etc/userdbshadow.dat` with Courier's own `makedatprog` (the gdbm files
//! `makeuserdb` would write; a rename, so a reader never sees half a file).
//! authuserdb notices the new file at the next lookup (observed: 40 users
//! added and logged in back to back all succeeded; every test here logs in
//! right after making its user). Passwords are stored as SHA-512
//! crypt (`openssl passwd -6`, the password on stdin): authuserdb ignores
//! `clearpw` for LOGIN. Each user's maildir is `<dir>/mail/<user>`, owned
//! by the system user `emaptest` (Courier's imapd runs as the uid/gid the
//! userdb gives). [`Courier::user`] then opens the INBOX read-write once,
//! as a mail client would have: until then Courier has no UIDVALIDITY
//! stored for it (see below); [`Courier::user_never_opened`] skips that.
//!
//! [`Courier::deliver`] delivers the way Courier's own local delivery
//! does: the message, with `Return-Path:` and `Delivered-To: <rcpt>`
//! prepended (Courier's RPLINE/DTLINE), is written into the maildir's
//! `tmp/` and renamed into `new/`. There is no LMTP; Courier's imapd
//! picks the file up (at once with FAM, at the next IDLE tick without).
//! The harness's file names sort in delivery order ([`Courier::deliver_file`]
//! says why that matters and lets a test choose the name).
//!
//! # What Courier does (observed on 5.0.13, Debian bookworm)
//! - Capabilities: `IMAP4rev1 UIDPLUS CHILDREN NAMESPACE
//!   THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE ACL
//!   ACL2=UNION ENABLE UTF8=ACCEPT` — no LITERAL+, no MOVE, no CONDSTORE.
//! - SELECT: FLAGS, PERMANENTFLAGS, EXISTS, RECENT, `[UIDVALIDITY n]`,
//!   `[MYRIGHTS ...]`, `OK [READ-WRITE]` — never `[UIDNEXT n]`.
//! - Hierarchy separator `.`, personal namespace `INBOX.`: folders are
//!   `INBOX.Name`.
//! - A failed LOGIN is answered `NO Login failed.` after 5 s (authlib's
//!   fixed delay); the connection stays open.
//! - Under EXAMINE (read-only), Courier stores nothing in the maildir's
//!   `courierimapuiddb`: the UIDs it gives new mail are numbered again, in
//!   file-name order, when more mail arrives (so two UIDs can swap within
//!   one session), and a mailbox no session has opened read-write gets a
//!   UIDVALIDITY invented from the clock by each session. Under SELECT
//!   both are stored and stay. (tests/courier.rs proves both; emap opens
//!   with EXAMINE.)
//! - SIGTERM to an imapd ([`Courier::kick`]) sends `* BYE Courier-IMAP
//!   server shut down by signal.` and closes the connection.
//! - Log lines (couriertcpd, imapd and authdaemond write to stderr, here
//!   `courier.log`): `INFO: LOGIN, user=NAME, ip=[...]`,
//!   `INFO: LOGIN FAILED, user=NAME, ip=[...]`,
//!   `ALERT: Maximum connection limit reached for ::ffff:127.0.0.1`.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::dovecot::{
    MAIL_USER, TestUser, find_binary, free_ports, id, mail_user_ids, run, stop_watchdog,
};
use super::raw_imap::{RawImap, is_ok, quoted};

/// `-maxperip` of [`Courier::capped_port`].
pub const CAPPED_PER_IP: usize = 2;

/// `-maxperip` of [`Courier::imap_port`] and [`Courier::nofam_port`]: far
/// above what the tests open, so parallel tests never meet it.
pub const MAX_PER_IP: usize = 500;

/// `IMAP_IDLE_TIMEOUT` of [`Courier::nofam_port`]: how often an idling
/// imapd without FAM looks at the maildir.
pub const NOFAM_IDLE_TIMEOUT_SECS: u64 = 1;

/// Envelope sender used by [`Courier::deliver`] (shows in `Return-Path`).
pub const DEFAULT_FROM: &str = "sender@emap.test";

/// How long Courier may take to listen before the start is declared failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a helper command (openssl, makedatprog, useradd) may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that marks every process of an instance.
const MARKER: &str = "EMAP_COURIER";

const SETUP_HINT: &str = "run scripts/setup-courier as root (or scripts/install-deps), which \
    unpacks Courier IMAP into /var/cache/emap/courier";

/// The watchdog, run by `sh` inside a private mount namespace as the
/// leader of a new process group. Arguments: $1 unpacked Courier root, $2
/// temp dir (also the instance marker), $3 log file, $4 main port, $5
/// capped port, $6 no-FAM port, $7 cap, $8 no-FAM IDLE tick, $9 max per IP.
/// Sets up the bind mounts, starts authdaemond and the three listeners,
/// blocks until EOF on stdin (the test process exiting), then SIGTERMs
/// every process carrying the marker (SIGKILL for any still there after
/// 3 s), reaps its children and removes the directory.
/// The `:` trap keeps the watchdog alive through a stray SIGTERM.
const WATCHDOG: &str = r#"
trap '' INT HUP
trap ':' TERM
C=$1 T=$2 LOG=$3
fail() { echo "Fatal: $*" >>"$LOG"; exit 1; }
mkdir -p /run/courier || fail "mkdir /run/courier"
for m in /etc/courier /usr/lib/courier-authlib; do
  [ -d "$m" ] || mkdir -p "$m" || fail "mkdir $m"
done
mount --bind "$T/etc" /etc/courier || fail "bind-mounting /etc/courier"
mount --bind "$T/run" /run/courier || fail "bind-mounting /run/courier"
mount --bind "$C/usr/lib/courier-authlib" /usr/lib/courier-authlib || fail "bind-mounting the auth modules"
export LD_LIBRARY_PATH="$C/usr/lib"
"$C/usr/lib/courier/courier-authlib/authdaemond" >>"$LOG" 2>&1 </dev/null &
i=0
while [ ! -S /run/courier/authdaemon/socket ]; do
  i=$((i + 1)); [ "$i" -lt 200 ] || fail "authdaemond did not create its socket"
  sleep 0.05
done
export IMAP_CAPABILITY="IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"
export IMAP_KEYWORDS=1 IMAP_ACL=1 IMAP_IDLE_TIMEOUT=60 IMAP_ENHANCEDIDLE=1 IMAP_USELOCKS=1
export IMAP_UMASK=022 IMAP_TLS_REQUIRED=0 IMAP_MAILBOX_SANITY_CHECK=1 IMAP_TRASHFOLDERNAME=Trash
tcpd() {
  port=$1 cap=$2; shift 2
  "$@" "$C/usr/sbin/couriertcpd" -address=127.0.0.1 -maxprocs=1000 -maxperip="$cap" \
    -nodnslookup -noidentlookup "$port" "$C/usr/lib/courier/courier/imaplogin" \
    "$C/usr/bin/imapd" Maildir >>"$LOG" 2>&1 </dev/null &
}
tcpd "$4" "$9" env GAM_CLIENT_ID="emap-$$"
tcpd "$5" "$7" env GAM_CLIENT_ID="emap-$$"
tcpd "$6" "$9" env GAM_CLIENT_ID="emap-$$-nofam" IMAP_IDLE_TIMEOUT="$8" \
  unshare -m --propagation private sh -c 'mount --bind /dev/null /usr/libexec/gam_server && exec "$@"' sh
read -r _line || :
signal_all() {
  found=0
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    if grep -qxz "EMAP_COURIER=$T" "$p/environ" 2>/dev/null; then
      found=1
      kill -"$1" "$pid" 2>/dev/null
    fi
  done
}
signal_all TERM
i=0
while [ "$found" = 1 ] && [ "$i" -lt 60 ]; do
  sleep 0.05
  signal_all 0
  i=$((i + 1))
done
[ "$found" = 1 ] && signal_all KILL
wait
i=0
while [ -e "$T" ] && [ "$i" -lt 50 ]; do
  rm -rf "$T" 2>/dev/null || sleep 0.1
  i=$((i + 1))
done
"#;

static COURIER: OnceLock<Result<Courier, String>> = OnceLock::new();
static USER_COUNTER: AtomicU64 = AtomicU64::new(0);
static DELIVERY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where `scripts/setup-courier` unpacks Courier: `$EMAP_COURIER_ROOT`, or
/// `/var/cache/emap/courier`.
pub fn root_dir() -> PathBuf {
    std::env::var_os("EMAP_COURIER_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/emap/courier"))
}

/// Why this machine cannot run the test Courier for a reason that is not
/// a failure — the tests are not run as root (the private mount namespace
/// needs it) — so a test may skip with that message. `None`: Courier must
/// start, and [`courier()`] panics if it does not.
pub fn unavailable() -> Option<String> {
    let euid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    (euid != 0).then(|| {
        "the test Courier runs in a private mount namespace, which needs root (CI runs as \
         root)"
            .to_owned()
    })
}

/// The Courier of this test binary, started on first call (from any
/// thread) and shared afterwards. Panics with the reason if it cannot be
/// started (check [`unavailable`] first to skip when not root).
pub fn courier() -> &'static Courier {
    super::trace::install();
    match COURIER.get_or_init(Courier::start) {
        Ok(courier) => courier,
        Err(e) => panic!("test Courier unavailable: {e}"),
    }
}

/// [`courier()`] that returns why Courier could not be started instead of
/// panicking: for the benchmark (examples/bench), which reports a server
/// that failed to start as an error of the scenario.
pub fn try_courier() -> Result<&'static Courier, String> {
    super::trace::install();
    COURIER
        .get_or_init(Courier::start)
        .as_ref()
        .map_err(Clone::clone)
}

/// A running Courier (see the module docs for its configuration).
pub struct Courier {
    /// Plaintext IMAP on 127.0.0.1: enhanced IDLE (FAM), no practical cap.
    pub imap_port: u16,
    /// The same server capped at [`CAPPED_PER_IP`] connections per IP.
    pub capped_port: u16,
    /// The same server without FAM: plain IDLE, ticking every
    /// [`NOFAM_IDLE_TIMEOUT_SECS`].
    pub nofam_port: u16,
    dir: PathBuf,
    root: PathBuf,
    log_path: PathBuf,
    openssl: PathBuf,
    mail_uid: u32,
    mail_gid: u32,
    /// (name, crypt hash) of every user, in creation order: the userdb is
    /// rebuilt from it whole.
    users: Mutex<Vec<(String, String)>>,
    /// The watchdog; its stdin pipe (closed only when this process exits)
    /// is what keeps Courier alive.
    _watchdog: Mutex<Child>,
}

enum StartError {
    /// Lost a port race: worth retrying with other ports.
    PortInUse(String),
    Fatal(String),
}

impl Courier {
    fn start() -> Result<Courier, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let root = root_dir();
        for bin in [
            "usr/sbin/couriertcpd",
            "usr/bin/imapd",
            "usr/lib/courier/courier/imaplogin",
            "usr/lib/courier/courier-authlib/authdaemond",
            "usr/lib/courier/courier-authlib/makedatprog",
        ] {
            if !root.join(bin).exists() {
                return Err(format!(
                    "Courier is not unpacked in {} ({bin} missing): {SETUP_HINT}",
                    root.display()
                ));
            }
        }
        if !Path::new("/usr/libexec/gam_server").exists() {
            return Err(format!(
                "gam_server (package gamin) is missing: {SETUP_HINT}"
            ));
        }
        let openssl = find_binary("openssl").ok_or("the openssl CLI is missing")?;
        let unshare = find_binary("unshare").ok_or("unshare (util-linux) is missing")?;
        let (mail_uid, mail_gid) = mail_owner()?;
        let mut last = String::new();
        for _attempt in 0..4 {
            match Courier::start_once(&root, &unshare, &openssl, mail_uid, mail_gid) {
                Ok(courier) => return Ok(courier),
                Err(StartError::PortInUse(e)) => last = e,
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
        Err(format!(
            "Courier kept losing port races; last failure:\n{last}"
        ))
    }

    fn start_once(
        root: &Path,
        unshare: &Path,
        openssl: &Path,
        mail_uid: u32,
        mail_gid: u32,
    ) -> Result<Courier, StartError> {
        let fatal = StartError::Fatal;
        let dir = tempfile::Builder::new()
            .prefix("emap-courier-")
            .tempdir()
            .map_err(|e| fatal(format!("creating the temp dir: {e}")))?
            .keep();
        let mut guard = DirGuard(Some(dir.clone()));
        set_mode(&dir, 0o755).map_err(fatal)?;
        for sub in ["etc", "run", "run/authdaemon", "mail"] {
            fs::create_dir(dir.join(sub)).map_err(|e| fatal(format!("mkdir {sub}: {e}")))?;
            set_mode(&dir.join(sub), 0o755).map_err(fatal)?;
        }
        std::os::unix::fs::chown(dir.join("mail"), Some(mail_uid), Some(mail_gid))
            .map_err(|e| fatal(format!("chown mail: {e}")))?;
        fs::write(
            dir.join("etc/authdaemonrc"),
            "authmodulelist=\"authuserdb\"\nauthmodulelistorig=\"authuserdb\"\ndaemons=3\n\
             authdaemonvar=/run/courier/authdaemon\nDEBUG_LOGIN=0\nDEFAULTOPTIONS=\"\"\n\
             LOGGEROPTS=\"\"\n",
        )
        .map_err(|e| fatal(format!("writing authdaemonrc: {e}")))?;
        let ports = free_ports(3).map_err(|e| fatal(format!("picking free ports: {e}")))?;
        let log_path = dir.join("courier.log");
        fs::write(&log_path, "").map_err(|e| fatal(format!("creating the log: {e}")))?;

        // An empty userdb, so authuserdb has files to open.
        write_userdb(root, &dir, mail_uid, mail_gid, &[]).map_err(fatal)?;

        let watchdog = Command::new(unshare)
            .args(["-m", "--propagation", "private", "sh", "-c", WATCHDOG])
            .arg("emap-courier-watchdog")
            .arg(root)
            .arg(&dir)
            .arg(&log_path)
            .arg(ports[0].to_string())
            .arg(ports[1].to_string())
            .arg(ports[2].to_string())
            .arg(CAPPED_PER_IP.to_string())
            .arg(NOFAM_IDLE_TIMEOUT_SECS.to_string())
            .arg(MAX_PER_IP.to_string())
            .env(MARKER, &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| fatal(format!("spawning the watchdog (unshare + sh): {e}")))?;
        // The watchdog removes the directory from now on.
        guard.0 = None;
        let courier = Courier {
            imap_port: ports[0],
            capped_port: ports[1],
            nofam_port: ports[2],
            dir,
            root: root.to_path_buf(),
            log_path,
            openssl: openssl.to_path_buf(),
            mail_uid,
            mail_gid,
            users: Mutex::new(Vec::new()),
            _watchdog: Mutex::new(watchdog),
        };
        if let Err(e) = courier.wait_ready() {
            stop_watchdog(&mut courier._watchdog.lock().expect("watchdog lock"));
            return Err(e);
        }
        Ok(courier)
    }

    /// Waits until every listener greets; fails early on a `Fatal:` in the
    /// log or the watchdog's exit.
    fn wait_ready(&self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            if log.contains("Address already in use") {
                return Err(StartError::PortInUse(tail(&log, 20)));
            }
            if log.contains("Fatal:") {
                return Err(StartError::Fatal(format!(
                    "Courier failed to start:\n{}",
                    tail(&log, 20)
                )));
            }
            if let Ok(Some(status)) = self._watchdog.lock().expect("watchdog lock").try_wait() {
                return Err(StartError::Fatal(format!(
                    "the Courier watchdog exited ({status}) during the start:\n{}",
                    tail(&log, 20)
                )));
            }
            let greets = |port| {
                RawImap::try_connect(port).is_ok_and(|imap| imap.greeting().starts_with("* OK"))
            };
            if [self.imap_port, self.capped_port, self.nofam_port]
                .into_iter()
                .all(greets)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(format!(
                    "Courier did not greet on 127.0.0.1 ports {}, {}, {} within \
                     {START_TIMEOUT:?}; log:\n{}",
                    self.imap_port,
                    self.capped_port,
                    self.nofam_port,
                    tail(&log, 20)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The temporary directory (userdb, maildirs, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The maildir of `user` (INBOX's `new/` and `cur/` are directly
    /// inside; folders are `.Name` subdirectories).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user)
    }

    /// A fresh user `<prefix>-<pid>-<n>` (lowercased) with a random
    /// password and an empty INBOX, able to log in immediately, whose INBOX
    /// has been opened read-write once (see [`Courier::user_with_password`]).
    pub fn user(&self, prefix: &str) -> TestUser {
        self.user_with_password(prefix, &random_password())
    }

    /// A fresh user with the given password, its INBOX opened read-write
    /// once (LOGIN, SELECT, LOGOUT), as any mailbox a mail client has
    /// used: Courier then has stored the INBOX's UIDVALIDITY (in
    /// `courierimapuiddb`). A mailbox only ever opened with EXAMINE has
    /// none stored, and each session invents one from the clock (see
    /// [`Courier::user_never_opened`]). Panics if the password holds CR, LF
    /// or NUL (LOGIN cannot carry them).
    pub fn user_with_password(&self, prefix: &str, password: &str) -> TestUser {
        let user = self.user_never_opened_with_password(prefix, password);
        let mut imap = RawImap::connect(self.imap_port);
        imap.login_ok(&user.name, &user.password);
        let lines = imap.select("INBOX");
        assert!(is_ok(&lines), "SELECT INBOX of {}: {lines:?}", user.name);
        imap.logout();
        assert!(
            self.maildir(&user.name).join("courierimapuiddb").exists(),
            "Courier stored no UID database for {} after SELECT",
            user.name
        );
        user
    }

    /// A fresh user whose INBOX no IMAP session has opened yet: Courier has
    /// no UIDVALIDITY stored for it, and a session that opens it with
    /// EXAMINE stores none either.
    pub fn user_never_opened(&self, prefix: &str) -> TestUser {
        self.user_never_opened_with_password(prefix, &random_password())
    }

    fn user_never_opened_with_password(&self, prefix: &str, password: &str) -> TestUser {
        assert!(
            !password.contains(['\r', '\n', '\0']),
            "passwords cannot contain CR, LF or NUL: {password:?}"
        );
        let user = TestUser {
            name: unique_name(prefix),
            password: password.to_string(),
        };
        super::trace::record_secret(&user.name, &user.password);
        let maildir = self.maildir(&user.name);
        for sub in ["", "cur", "new", "tmp"] {
            let path = maildir.join(sub);
            fs::create_dir_all(&path)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o700)))
                .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
            std::os::unix::fs::chown(&path, Some(self.mail_uid), Some(self.mail_gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
        let hash = self.crypt(&user.password);
        {
            let mut users = self.users.lock().expect("users lock");
            users.push((user.name.clone(), hash));
            write_userdb(&self.root, &self.dir, self.mail_uid, self.mail_gid, &users)
                .unwrap_or_else(|e| panic!("adding {} to the userdb: {e}", user.name));
        }
        user
    }

    /// SHA-512 crypt of `password` (`openssl passwd -6`, password on stdin
    /// so it never shows in a process list).
    fn crypt(&self, password: &str) -> String {
        let mut child = Command::new(&self.openssl)
            .args(["passwd", "-6", "-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning openssl passwd: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(password.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .unwrap_or_else(|e| panic!("writing to openssl passwd: {e}"));
        drop(stdin);
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("openssl passwd: {e}"));
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success() && hash.starts_with("$6$"),
            "openssl passwd -6 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        hash
    }

    /// Delivers `raw` into the INBOX of user `rcpt` from [`DEFAULT_FROM`],
    /// as Courier's local delivery does: `Return-Path` and `Delivered-To:
    /// <rcpt>` prepended, written to `tmp/`, renamed into `new/`.
    pub fn deliver(&self, rcpt: &str, raw: &[u8]) {
        self.deliver_from(DEFAULT_FROM, rcpt, raw);
    }

    /// Like [`Courier::deliver`] with an explicit envelope sender.
    pub fn deliver_from(&self, from: &str, rcpt: &str, raw: &[u8]) {
        let mut mail = format!("Return-Path: <{from}>\r\nDelivered-To: {rcpt}\r\n").into_bytes();
        mail.extend_from_slice(raw);
        self.deliver_raw(rcpt, &mail);
    }

    /// Delivers `raw` into the INBOX of `user` as mail for the address
    /// `delivered_to` (an alias or catch-all address of that mailbox: it
    /// appears only in the `Delivered-To:` header Courier adds).
    pub fn deliver_as(&self, user: &str, delivered_to: &str, raw: &[u8]) {
        let mut mail = format!("Return-Path: <{DEFAULT_FROM}>\r\nDelivered-To: {delivered_to}\r\n")
            .into_bytes();
        mail.extend_from_slice(raw);
        self.deliver_raw(user, &mail);
    }

    /// Puts `raw` as it is (no header added) into the INBOX of `user`,
    /// under a maildir name that sorts after every earlier delivery's (see
    /// [`Courier::deliver_file`]).
    pub fn deliver_raw(&self, user: &str, raw: &[u8]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Zero-padded, so that the names sort in delivery order.
        let name = format!(
            "{:010}.M{:06}P{}Q{:09}.emap-test,S={}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            DELIVERY_COUNTER.fetch_add(1, Ordering::Relaxed),
            raw.len()
        );
        self.deliver_file(user, &name, raw);
    }

    /// Puts `raw` into the INBOX of `user` as the maildir file `name`
    /// (written to `tmp/`, renamed into `new/`).
    ///
    /// The name matters: Courier gives new messages their UIDs in the
    /// lexical order of their file names, and under EXAMINE it does not
    /// store them, so a later rescan numbers the unsaved ones again, in
    /// name order. Courier's own delivery names (`<secs>.M<usec>P<pid>...`,
    /// microseconds unpadded) sort against the delivery order when the
    /// microseconds of one second gain a digit (`M99999` then `M100000`).
    /// [`Courier::deliver_raw`] avoids that with padded names; this lets
    /// a test reproduce it.
    pub fn deliver_file(&self, user: &str, name: &str, raw: &[u8]) {
        let maildir = self.maildir(user);
        assert!(
            maildir.join("new").is_dir(),
            "no maildir for {user:?}: not a user of this Courier"
        );
        assert!(
            !name.is_empty() && !name.contains('/') && !name.starts_with('.'),
            "not a maildir file name: {name:?}"
        );
        let tmp = maildir.join("tmp").join(name);
        fs::write(&tmp, raw)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)))
            .and_then(|()| std::os::unix::fs::chown(&tmp, Some(self.mail_uid), Some(self.mail_gid)))
            .and_then(|()| fs::rename(&tmp, maildir.join("new").join(name)))
            .unwrap_or_else(|e| panic!("delivering into {}: {e}", maildir.display()));
    }

    /// [`Courier::deliver`] on tokio's blocking pool, for async tests.
    pub async fn deliver_async(&'static self, rcpt: &str, raw: &[u8]) {
        let (rcpt, raw) = (rcpt.to_string(), raw.to_vec());
        super::blocking(move || self.deliver(&rcpt, &raw)).await
    }

    /// APPENDs `raw` to `mailbox` of `user` over IMAP (creating the mailbox
    /// if needed; Courier's folders are `INBOX.Name`); returns the tagged OK
    /// line (with `[APPENDUID ...]`).
    pub fn append(&self, user: &TestUser, mailbox: &str, raw: &[u8]) -> String {
        let mut imap = RawImap::connect(self.imap_port);
        imap.login_ok(&user.name, &user.password);
        if !mailbox.eq_ignore_ascii_case("INBOX") {
            create_on(&mut imap, mailbox);
        }
        let lines = imap.append(mailbox, raw);
        assert!(is_ok(&lines), "APPEND to {mailbox} failed: {lines:?}");
        imap.logout();
        lines.last().cloned().unwrap_or_default()
    }

    /// Creates `mailbox` for `user` (no error if it exists).
    pub fn create_mailbox(&self, user: &TestUser, mailbox: &str) {
        let mut imap = RawImap::connect(self.imap_port);
        imap.login_ok(&user.name, &user.password);
        create_on(&mut imap, mailbox);
        imap.logout();
    }

    /// The raw messages in `mailbox` of `user`, in sequence order.
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

    /// The pids of the logged-in IMAP connections of `user` (one `imapd`
    /// process each: imaplogin execs imapd after LOGIN), on any listener.
    pub fn imapd_pids(&self, user: &str) -> Vec<u32> {
        let marker = format!("{MARKER}={}", self.dir.display());
        let authenticated = format!("AUTHENTICATED={user}");
        instance_processes(&marker)
            .into_iter()
            .filter(|(_, comm, env)| comm == "imapd" && env.contains(&authenticated))
            .map(|(pid, _, _)| pid)
            .collect()
    }

    /// Logged-in IMAP connections of `user`, as the server has them (its
    /// imapd processes).
    pub fn connections(&self, user: &str) -> usize {
        self.imapd_pids(user).len()
    }

    /// Polls [`Courier::connections`] until it equals `expected` or
    /// `timeout` passes; returns the last count seen.
    pub fn wait_connections(&self, user: &str, expected: usize, timeout: Duration) -> usize {
        super::wait_count(timeout, expected, || self.connections(user))
    }

    /// [`Courier::wait_connections`] on tokio's blocking pool.
    pub async fn wait_connections_async(
        &'static self,
        user: &str,
        expected: usize,
        timeout: Duration,
    ) -> usize {
        let user = user.to_string();
        super::blocking(move || self.wait_connections(&user, expected, timeout)).await
    }

    /// Ends every IMAP connection of `user` by killing its imapd processes
    /// (SIGTERM; Courier has no admin command for it): the client gets
    /// `* BYE Courier-IMAP server shut down by signal.` and EOF. Returns whether there was one. Does not wait for
    /// the processes to be gone (use [`Courier::wait_connections`]).
    pub fn kick(&self, user: &str) -> bool {
        let pids = self.imapd_pids(user);
        for pid in &pids {
            let mut cmd = Command::new("kill");
            cmd.args(["-TERM", &pid.to_string()]);
            // It may have exited meanwhile: ignore.
            let _ = run(cmd, COMMAND_TIMEOUT);
        }
        !pids.is_empty()
    }

    /// The whole log so far (couriertcpd, imapd and authdaemond).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// Successful IMAP logins of `user` so far.
    pub fn login_successes(&self, user: &str) -> usize {
        let needle = format!("INFO: LOGIN, user={user}, ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Failed IMAP logins of `user` so far.
    pub fn login_failures(&self, user: &str) -> usize {
        let needle = format!("INFO: LOGIN FAILED, user={user}, ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// All IMAP login attempts of `user` so far.
    pub fn login_attempts(&self, user: &str) -> usize {
        self.login_successes(user) + self.login_failures(user)
    }

    /// Waits until the login attempt count of `user` has not changed for
    /// `quiet` (at most 20 s overall) and returns it: for asserting an exact
    /// count ("one attempt, and no retry") without racing the log.
    pub fn settled_login_attempts(&self, user: &str, quiet: Duration) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
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

    /// Connections couriertcpd refused at its per-IP cap so far (all
    /// listeners).
    pub fn cap_refusals(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Maximum connection limit reached"))
            .count()
    }
}

/// Writes `etc/userdb.dat` (account data) and `etc/userdbshadow.dat`
/// (password hashes) for `users` (name, crypt hash), as `makeuserdb` would.
fn write_userdb(
    root: &Path,
    dir: &Path,
    uid: u32,
    gid: u32,
    users: &[(String, String)],
) -> Result<(), String> {
    let mut accounts = String::new();
    let mut shadow = String::new();
    for (name, hash) in users {
        let maildir = dir.join("mail").join(name);
        accounts.push_str(&format!(
            "{name}\tuid={uid}|gid={gid}|home={m}|mail={m}\n",
            m = maildir.display()
        ));
        shadow.push_str(&format!("{name}\tsystempw={hash}\n"));
    }
    accounts.push_str(".\n");
    shadow.push_str(".\n");
    let etc = dir.join("etc");
    makedat(
        root,
        &accounts,
        &etc.join("userdb.tmp"),
        &etc.join("userdb.dat"),
    )?;
    makedat(
        root,
        &shadow,
        &etc.join("userdbshadow.tmp"),
        &etc.join("userdbshadow.dat"),
    )
}

/// Runs Courier's `makedatprog - <tmp> <dat>` with `input` (`key\tvalue`
/// lines ending with `.`): builds the gdbm file and renames it in place.
fn makedat(root: &Path, input: &str, tmp: &Path, dat: &Path) -> Result<(), String> {
    let mut child = Command::new(root.join("usr/lib/courier/courier-authlib/makedatprog"))
        .arg("-")
        .arg(tmp)
        .arg(dat)
        .env("LD_LIBRARY_PATH", root.join("usr/lib"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning makedatprog: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(input.as_bytes())
        .map_err(|e| format!("writing to makedatprog: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("makedatprog: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "makedatprog {} failed: {}{}",
            dat.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn create_on(imap: &mut RawImap, mailbox: &str) {
    let name = quoted(mailbox).expect("mailbox name must be 7-bit");
    let lines = imap.command(&format!("CREATE {name}"));
    assert!(
        is_ok(&lines) || lines.last().is_some_and(|l| l.contains("exists")),
        "CREATE {mailbox} failed: {lines:?}"
    );
}

/// The live processes of the instance whose temporary directory is `dir`
/// (every process carrying its marker), e.g. to check that none outlives
/// the test process.
pub fn processes_of(dir: &Path) -> Vec<u32> {
    instance_processes(&format!("{MARKER}={}", dir.display()))
        .into_iter()
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Every live process whose environment holds `marker` (`NAME=value`):
/// (pid, comm, environment).
fn instance_processes(marker: &str) -> Vec<(u32, String, Vec<String>)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
            let env: Vec<String> = environ
                .split(|&b| b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            if !env.iter().any(|v| v == marker) {
                return None;
            }
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let state = rest.split_whitespace().next()?;
            (state != "Z" && state != "X").then_some((pid, comm, env))
        })
        .collect()
}

/// The uid and gid of the system user [`MAIL_USER`], created when missing.
fn mail_owner() -> Result<(u32, u32), String> {
    mail_user_ids()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `<prefix>-<pid>-<n>`, lowercased; the prefix must be a simple name.
fn unique_name(prefix: &str) -> String {
    assert!(
        !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')),
        "user prefix must be non-empty ASCII letters, digits, '-' or '_': {prefix:?}"
    );
    let n = USER_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{n}", prefix.to_ascii_lowercase(), std::process::id())
}

fn random_password() -> String {
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
