//! The bridge's and the stream's settings, with their defaults in one
//! place (`Default`), as emap keeps its own knobs in `emap::Config`.

use std::time::Duration;

/// The JetStream stream the mail goes to, and the two key-value buckets.
/// Every bridge and waiter of one deployment uses the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The stream's name. Default `EMAP`.
    pub stream: String,
    /// The first token of every subject: mail goes to
    /// `<prefix>.mail.<inbox>.all` and `<prefix>.mail.<inbox>.to.<address>`.
    /// Default `emap`.
    pub prefix: String,
    /// How long the stream keeps a mail: the farthest back a waiter's
    /// `since`/`max_age` can reach. Default 1 hour.
    pub max_age: Duration,
    /// The stream's byte bound (oldest mail dropped first). Default 1 GiB.
    pub max_bytes: i64,
    /// How long the stream remembers a `Nats-Msg-Id` to drop a re-publish.
    /// A new holder re-publishes at most what the old one published after
    /// its last stored position, right after the take-over, so it must
    /// exceed the lease TTL plus the take-over backoff by a wide margin
    /// ([`BridgeConfig::validate`] refuses one not above `lease_ttl +
    /// acquire_every`). Default 2 min (JetStream's default).
    pub duplicate_window: Duration,
    /// The bucket of the leases (its TTL is the lease TTL). Default
    /// `emap_leases`.
    pub lease_bucket: String,
    /// The bucket of the stored positions (no TTL). Default `emap_positions`.
    pub position_bucket: String,
    /// File storage (survives a server restart) or memory. Default file.
    pub file_storage: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            stream: "EMAP".into(),
            prefix: "emap".into(),
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            lease_bucket: "emap_leases".into(),
            position_bucket: "emap_positions".into(),
            file_storage: true,
        }
    }
}

/// A bridge process's settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The stream and buckets.
    pub stream: StreamConfig,
    /// How long a lease lives without renewal: a dead holder's inbox is
    /// taken over within this plus `acquire_every`. Default 10 s.
    pub lease_ttl: Duration,
    /// How often the holder renews: well inside the TTL. Default TTL / 4.
    pub renew_every: Duration,
    /// How often a standby tries to take a lease (jittered). Default 1 s.
    pub acquire_every: Duration,
    /// The holder stops publishing this long before its lease would
    /// expire by its own clock (from the moment the last renewal was sent).
    /// Default 2 s.
    pub safety_margin: Duration,
    /// How long a publish may wait for its acknowledgement before it is
    /// tried again (with the same `Nats-Msg-Id`). Default 5 s.
    pub ack_timeout: Duration,
    /// The embedded emap registry's settings.
    pub emap: emap::Config,
    /// This process's name in the lease (logs and the lease value).
    /// Default `<hostname>-<pid>`.
    pub holder: String,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        let ttl = Duration::from_secs(10);
        BridgeConfig {
            stream: StreamConfig::default(),
            lease_ttl: ttl,
            renew_every: ttl / 4,
            acquire_every: Duration::from_secs(1),
            safety_margin: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(5),
            emap: emap::Config {
                // A holder that lost its lease logs out at once.
                linger: Duration::from_millis(1),
                ..emap::Config::default()
            },
            holder: default_holder(),
        }
    }
}

impl BridgeConfig {
    /// Checks that the lease timings can work together.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |s: &str| Err(crate::Error::InvalidConfig(s.into()));
        if self.lease_ttl < Duration::from_secs(1) {
            return bad("lease_ttl must be at least 1 s (the bucket TTL has whole-second effect)");
        }
        if self.renew_every.is_zero() || self.renew_every * 2 > self.lease_ttl {
            return bad("renew_every must be positive and at most half of lease_ttl");
        }
        if self.safety_margin + self.renew_every >= self.lease_ttl {
            return bad("renew_every + safety_margin must be below lease_ttl");
        }
        if self.acquire_every.is_zero() || self.ack_timeout.is_zero() {
            return bad("acquire_every and ack_timeout must be positive");
        }
        if self.stream.duplicate_window > self.stream.max_age {
            return bad("duplicate_window must not exceed the stream's max_age");
        }
        // A take-over re-publishes the old holder's last mail: the stream
        // must still remember their ids, or they reach waiters twice.
        if self.stream.duplicate_window <= self.lease_ttl + self.acquire_every {
            return bad("duplicate_window must exceed lease_ttl + acquire_every");
        }
        crate::subject::check_token("stream prefix", &self.stream.prefix)?;
        self.emap.validate()?;
        Ok(())
    }
}

fn default_holder() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(c: &BridgeConfig) -> String {
        match c.validate() {
            Err(crate::Error::InvalidConfig(why)) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_duplicate_window_within_a_take_over_is_refused() {
        let mut c = BridgeConfig::default();
        c.validate().unwrap();
        c.lease_ttl = Duration::from_secs(119);
        c.renew_every = Duration::from_secs(30);
        assert!(refused(&c).contains("duplicate_window"));
        c.lease_ttl = Duration::from_secs(110);
        c.acquire_every = Duration::from_secs(10);
        assert!(refused(&c).contains("duplicate_window"));
        c.stream.duplicate_window = Duration::from_secs(121);
        c.validate().unwrap();
    }
}
