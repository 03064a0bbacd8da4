//! The server a scenario runs against — a Dovecot or Cyrus started by
//! tests/support's starters (the integration suite's, with the bench's own
//! connection cap: 10, Dovecot's shipped default, on both), the suite's
//! Courier, or an existing server named with `--host` — behind one
//! interface: make inboxes, deliver to an address, count the server's
//! connections.
//!
//! An inbox is one account plus the domain its subscribers' addresses use:
//! on Dovecot a real catch-all domain (any `local@domain` lands in the
//! account); on Courier the mail is written into the account's maildir as
//! Courier's local delivery does for an alias, with the address in
//! `Delivered-To:`; on Cyrus and an existing server the envelope goes to
//! the account and the address only appears in `To:` — what emap filters
//! on is the same either way.
//!
//! Courier is the suite's own instance (tests/support/courier.rs, started
//! once per process, root only), on its main listener: enhanced IDLE
//! through gam_server, and a per-IP cap (`-maxperip`) of
//! [`MAX_PER_IP`](crate::support::courier::MAX_PER_IP). Courier caps
//! connections per IP, not per user, so the bench's per-user cap does not
//! apply; the `limit` scenario holds two connections (emap's and the
//! floor's; delivery writes files), which fits even Debian's default of 20.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::deliver::Route;
use crate::support::TestUser;
use crate::support::courier::Courier;
use crate::support::cyrus::Cyrus;
use crate::support::dovecot::Dovecot;

/// The per-user connection cap of the bench's servers (Dovecot's shipped
/// `mail_max_userip_connections`; Cyrus' `maxlogins_per_user` alike), so
/// the per-task scenario meets the cap a real deployment has.
pub const MAX_CONNECTIONS_PER_USER: usize = 10;

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dovecot,
    Cyrus,
    Courier,
    External,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Dovecot => "dovecot",
            Kind::Cyrus => "cyrus",
            Kind::Courier => "courier",
            Kind::External => "external",
        }
    }
}

/// An account and the domain of its subscribers' addresses.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub user: String,
    pub password: String,
    pub domain: String,
}

impl Inbox {
    pub fn address(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }
}

/// An existing server (`--host`).
#[derive(Debug, Clone)]
pub struct External {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

pub struct Server {
    pub kind: Kind,
    dovecot: Option<Dovecot>,
    cyrus: Option<Cyrus>,
    courier: Option<&'static Courier>,
    external: Option<External>,
    handed_out: bool,
}

impl Server {
    pub fn start(kind: Kind, external: Option<External>) -> Result<Server, String> {
        let mut s = Server {
            kind,
            dovecot: None,
            cyrus: None,
            courier: None,
            external: None,
            handed_out: false,
        };
        match kind {
            Kind::Dovecot => {
                s.dovecot = Some(Dovecot::start_with_cap(MAX_CONNECTIONS_PER_USER)?);
            }
            Kind::Cyrus => s.cyrus = Some(Cyrus::start_with_cap(MAX_CONNECTIONS_PER_USER)?),
            Kind::Courier => s.courier = Some(crate::support::courier::try_courier()?),
            Kind::External => {
                s.external = Some(external.ok_or("--host needs --user and --password-env")?)
            }
        }
        Ok(s)
    }

    pub fn host(&self) -> String {
        self.external
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_owned(), |e| e.host.clone())
    }

    pub fn imap_port(&self) -> u16 {
        match (&self.dovecot, &self.cyrus, self.courier, &self.external) {
            (Some(d), _, _, _) => d.imap_port,
            (_, Some(c), _, _) => c.imap_port,
            (_, _, Some(c), _) => c.imap_port,
            (_, _, _, Some(e)) => e.port,
            _ => 0,
        }
    }

    pub fn dovecot(&self) -> Option<&Dovecot> {
        self.dovecot.as_ref()
    }

    /// A fresh account with an empty INBOX (`prefix-<n>`), and its domain.
    pub fn inbox(&mut self, prefix: &str) -> Result<Inbox, String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let user = format!("{prefix}-{n}");
        let password = format!("pw-{:x}-{n}", crate::metrics::now_ns());
        let domain = format!("{user}.emap.bench");
        match self.kind {
            Kind::Dovecot => {
                let d = self.dovecot.as_ref().ok_or("no dovecot")?;
                let account = TestUser {
                    name: user.clone(),
                    password: password.clone(),
                };
                d.add_user(&account);
                d.add_domain(&domain, &account);
            }
            Kind::Cyrus => {
                self.cyrus
                    .as_ref()
                    .ok_or("no cyrus")?
                    .add_user(&user, &password)?;
            }
            Kind::Courier => {
                // Courier names the account itself (`<prefix>-<pid>-<n>`)
                // and opens its INBOX read-write once, so that it has a
                // stored UIDVALIDITY, as any mailbox a client has used.
                let account = self.courier.ok_or("no courier")?.user(prefix);
                let domain = format!("{}.emap.bench", account.name);
                return Ok(Inbox {
                    user: account.name,
                    password: account.password,
                    domain,
                });
            }
            Kind::External => {
                if self.handed_out {
                    return Err("an existing server (--host) offers only one inbox".into());
                }
                self.handed_out = true;
                let e = self.external.as_ref().ok_or("no server")?;
                return Ok(Inbox {
                    user: e.user.clone(),
                    password: e.password.clone(),
                    domain: format!("{prefix}-{n}.emap.bench"),
                });
            }
        }
        Ok(Inbox {
            user,
            password,
            domain,
        })
    }

    /// Lets the existing server's single inbox be used again (scenarios
    /// run one after another).
    pub fn release_inboxes(&mut self) {
        self.handed_out = false;
    }

    /// How to deliver to `inbox`.
    pub fn route(&self, inbox: &Inbox) -> Route {
        match (&self.dovecot, &self.cyrus, self.courier, &self.external) {
            (Some(d), _, _, _) => Route::LmtpTcp(d.lmtp_port),
            (_, Some(c), _, _) => Route::LmtpTcp(c.lmtp_port),
            (_, _, Some(_), _) => Route::Maildir {
                user: inbox.user.clone(),
            },
            (_, _, _, Some(e)) => Route::Append {
                host: e.host.clone(),
                port: e.port,
                user: inbox.user.clone(),
                password: inbox.password.clone(),
            },
            _ => unreachable!("a server is always one of the four"),
        }
    }

    /// The envelope recipient for `local` in `inbox`.
    pub fn rcpt(&self, inbox: &Inbox, local: &str) -> String {
        match self.kind {
            Kind::Dovecot | Kind::Courier => inbox.address(local),
            Kind::Cyrus | Kind::External => inbox.user.clone(),
        }
    }

    /// Logged-in IMAP connections the server holds for these inboxes, as
    /// it counts them (`doveadm who` on Dovecot, its `proc/` files on
    /// Cyrus, its imapd processes on Courier); `None` on an existing server.
    pub fn connections(&self, inboxes: &[&Inbox]) -> Option<usize> {
        let users = inboxes.iter().map(|i| i.user.as_str());
        match (&self.dovecot, &self.cyrus, self.courier) {
            (Some(d), _, _) => Some(users.map(|u| d.connections(u)).sum()),
            (_, Some(c), _) => Some(users.map(|u| c.connections(u)).sum()),
            (_, _, Some(c)) => Some(users.map(|u| c.connections(u)).sum()),
            _ => None,
        }
    }

    /// Stops the server (its watchdog stops it when the handle is
    /// dropped) before the next one starts. Courier, shared by the whole
    /// process, stops when the process exits.
    pub fn stop(self) {
        drop(self);
    }
}
