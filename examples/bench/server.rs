//! The server a scenario runs against — the bench's own Dovecot or Cyrus,
//! or an existing server named with `--host` — behind one interface:
//! make inboxes, deliver to an address, count the server's connections.
//!
//! An inbox is one account plus the domain its subscribers' addresses use:
//! on Dovecot a real catch-all domain (any `local@domain` lands in the
//! account); on Cyrus and an existing server the envelope goes to the
//! account and the address only appears in `To:` — what emap filters on
//! is the same either way.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cyrus::Cyrus;
use crate::deliver::Route;
use crate::dovecot::Dovecot;

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dovecot,
    Cyrus,
    External,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Dovecot => "dovecot",
            Kind::Cyrus => "cyrus",
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
    external: Option<External>,
    handed_out: bool,
}

impl Server {
    pub fn start(kind: Kind, external: Option<External>) -> Result<Server, String> {
        let mut s = Server {
            kind,
            dovecot: None,
            cyrus: None,
            external: None,
            handed_out: false,
        };
        match kind {
            Kind::Dovecot => s.dovecot = Some(Dovecot::start()?),
            Kind::Cyrus => s.cyrus = Some(Cyrus::start()?),
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
        match (&self.dovecot, &self.cyrus, &self.external) {
            (Some(d), _, _) => d.imap_port,
            (_, Some(c), _) => c.imap_port,
            (_, _, Some(e)) => e.port,
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
                d.add_user(&user, &password)?;
                d.add_domain(&domain, &user)?;
            }
            Kind::Cyrus => {
                self.cyrus
                    .as_ref()
                    .ok_or("no cyrus")?
                    .add_user(&user, &password)?;
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
        match (&self.dovecot, &self.cyrus, &self.external) {
            (Some(d), _, _) => Route::LmtpTcp(d.lmtp_port),
            (_, Some(c), _) => Route::LmtpUnix(c.lmtp_socket.clone()),
            (_, _, Some(e)) => Route::Append {
                host: e.host.clone(),
                port: e.port,
                user: inbox.user.clone(),
                password: inbox.password.clone(),
            },
            _ => unreachable!("a server is always one of the three"),
        }
    }

    /// The envelope recipient for `local` in `inbox`.
    pub fn rcpt(&self, inbox: &Inbox, local: &str) -> String {
        match self.kind {
            Kind::Dovecot => inbox.address(local),
            Kind::Cyrus | Kind::External => inbox.user.clone(),
        }
    }

    /// IMAP connections the server holds for these inboxes: `doveadm who`
    /// on Dovecot (per user); on Cyrus the established sockets on its
    /// IMAP port (all users: run one client at a time); `None` on an
    /// existing server.
    pub fn connections(&self, inboxes: &[&Inbox]) -> Option<usize> {
        match (&self.dovecot, &self.cyrus) {
            (Some(d), _) => {
                let users: Vec<&str> = inboxes.iter().map(|i| i.user.as_str()).collect();
                d.connections(&users).ok()
            }
            (_, Some(c)) => Some(c.connections()),
            _ => None,
        }
    }

    pub fn stop(&mut self) {
        if let Some(d) = self.dovecot.as_mut() {
            d.stop();
        }
        if let Some(c) = self.cyrus.as_mut() {
            c.stop();
        }
    }
}
