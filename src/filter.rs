//! [`Filter`]: which mail a subscriber is waiting for.
//!
//! A session indexes its subscribers by [`Filter::recipient`], so a new
//! mail is only checked against the subscribers waiting at one of its
//! addresses (plus those with no address); [`Filter::matches`] then checks
//! the rest. [`Filter::earliest`] tells the session how far back a new
//! subscriber wants mail, so that it can be handed mail that arrived just
//! before it subscribed.
//!
//! Case: addresses are compared ASCII case-insensitively (the domain is
//! case-insensitive and servers treat local parts that way in practice;
//! a non-ASCII local part must match its case exactly). Sender and subject
//! substrings are compared after Unicode lower-casing
//! ([`str::to_lowercase`]) of both sides.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::encode::{check_value, same_mailbox};
use crate::{Config, Folder, Mail};

/// What a subscriber wants. [`Filter::new`] matches every mail; each
/// builder method adds a condition, and a mail must meet all of them.
///
/// ```
/// # use std::time::Duration;
/// let f = emap::Filter::new()
///     .to("Task-17@catchall.example")
///     .subject_contains("verify")
///     .max_age(Duration::from_secs(600));
/// assert_eq!(f.recipient(), Some("task-17@catchall.example"));
/// ```
#[derive(Clone, Debug)]
pub struct Filter {
    /// ASCII lower-cased.
    to: Option<String>,
    /// Unicode lower-cased.
    from_contains: Option<String>,
    /// Unicode lower-cased.
    subject_contains: Option<String>,
    since: Option<SystemTime>,
    max_age: Option<Duration>,
    /// How much earlier than [`Filter::earliest`] a mail may have been
    /// received and still match; see [`Filter::with_clock_skew`].
    clock_skew: Duration,
    after: Option<After>,
    /// The folders a mail may come from; empty: any folder of the
    /// credential.
    folders: Vec<Folder>,
}

/// The mail given to [`Filter::after`]: what is needed to tell whether
/// another mail came after it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct After {
    mailbox: String,
    uid_validity: u32,
    uid: u32,
    received_at: Option<SystemTime>,
}

impl After {
    /// Whether `mail` came after this one: same mailbox, and a higher UID
    /// under the same UIDVALIDITY, or under another UIDVALIDITY (the
    /// mailbox was recreated, UIDs started over) received at the same time
    /// or later. When either date is unknown, a mail of another
    /// UIDVALIDITY passes: it cannot be the given mail, and dropping it
    /// could lose the one the caller waits for.
    fn precedes(&self, mail: &Mail) -> bool {
        if !same_mailbox(&self.mailbox, mail.mailbox()) {
            return false;
        }
        if mail.uid_validity() == self.uid_validity {
            return mail.uid() > self.uid;
        }
        match (self.received_at, mail.received_at()) {
            (Some(given), Some(at)) => at >= given,
            _ => true,
        }
    }
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            to: None,
            from_contains: None,
            subject_contains: None,
            since: None,
            max_age: None,
            clock_skew: Config::default().clock_skew,
            after: None,
            folders: Vec::new(),
        }
    }
}

impl Filter {
    /// A filter that matches every mail.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only mail with `addr` among its recipients ([`Mail::recipients`]:
    /// `To`, `Cc`, `Delivered-To`, `X-Original-To`, `X-Forwarded-To`,
    /// `Envelope-To` and the `for` clause of the topmost `Received`
    /// header): the whole address, case-insensitively. Surrounding
    /// spaces and tabs are ignored.
    pub fn to(mut self, addr: impl Into<String>) -> Self {
        let addr = addr.into();
        self.to = Some(addr.trim_matches([' ', '\t']).to_ascii_lowercase());
        self
    }

    /// Only mail with `needle` in a `From` address or display name,
    /// case-insensitively. An empty needle matches every mail.
    pub fn from_contains(mut self, needle: impl Into<String>) -> Self {
        self.from_contains = Some(needle.into().to_lowercase());
        self
    }

    /// Only mail with `needle` in its decoded subject, case-insensitively.
    /// An empty needle matches every mail.
    pub fn subject_contains(mut self, needle: impl Into<String>) -> Self {
        self.subject_contains = Some(needle.into().to_lowercase());
        self
    }

    /// Only mail received at or after `t` (see [`Filter::matches`] for
    /// which clock), give or take the clock skew allowance: times are
    /// compared at whole seconds, and a mail matches when
    /// `floor(received_at) >= floor(t - clock_skew)` ([`Config::clock_skew`],
    /// 2 s by default). So "trigger the mail, then subscribe with
    /// `since(SystemTime::now())`" gets the mail although the server's
    /// `INTERNALDATE` has one-second resolution and its clock may run a
    /// little behind; the price is that mail received up to `clock_skew`
    /// before `t` matches too.
    pub fn since(mut self, t: SystemTime) -> Self {
        self.since = Some(t);
        self
    }

    /// Only mail received at most `age` before the time the filter is
    /// applied (see [`Filter::matches`] for which clock), with the same
    /// whole-second comparison and clock skew allowance as
    /// [`Filter::since`]: a mail matches when
    /// `floor(received_at) >= floor(now - age - clock_skew)`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Only mail that came after `mail`: "the next one after this mail",
    /// for a task that waits twice at the same address (it logs in twice
    /// and needs the second code). Without it, a second wait with
    /// [`Filter::max_age`] or [`Filter::since`] is handed the first mail
    /// again from the session's replay window.
    ///
    /// A mail passes when it is in the same mailbox as `mail` and either
    /// has the same UIDVALIDITY and a higher UID, or has another
    /// UIDVALIDITY (the mailbox was recreated) and was received at the same
    /// time as `mail` or later ([`Mail::received_at`], exactly; a mail of
    /// another UIDVALIDITY with either date unknown passes).
    ///
    /// It does not reach back by itself: combine it with `max_age` or
    /// `since` so that a mail which arrived before the call is found too.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(h: emap::Handle, inbox: emap::Credential) -> Result<(), emap::Error> {
    /// let wait = Duration::from_secs(300);
    /// let recent = emap::Filter::new().to("task42@example.com").max_age(wait);
    /// let first = h.wait_for(inbox.clone(), recent.clone(), wait).await?;
    /// // ... log in again ...
    /// let second = h.wait_for(inbox, recent.after(&first), wait).await?;
    /// # Ok(()) }
    /// ```
    pub fn after(mut self, mail: &Mail) -> Self {
        self.after = Some(After {
            mailbox: mail.mailbox().to_owned(),
            uid_validity: mail.uid_validity(),
            uid: mail.uid(),
            received_at: mail.received_at(),
        });
        self
    }

    /// Sets the clock skew allowance of the time conditions (see
    /// [`Filter::since`]); a session calls it with its
    /// [`Config::clock_skew`]. The default is `Config::default()`'s.
    pub(crate) fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// The recipient address this filter waits at, lower-cased (ASCII), if
    /// it has one. Sessions index subscribers by it.
    pub fn recipient(&self) -> Option<&str> {
        self.to.as_deref()
    }

    /// Only mail from `folder`: a name (`"Junk"`, `INBOX`
    /// case-insensitive), matched against [`Mail::mailbox`], or a
    /// [`SpecialUse`](crate::SpecialUse), matched against the folder the
    /// credential named ([`Mail::folder`]), whatever the server calls it.
    /// Call it again to accept several folders; without it, mail from any
    /// folder of the credential ([`Credential::also_watch`](crate::Credential::also_watch))
    /// matches.
    pub fn folder(mut self, folder: impl Into<Folder>) -> Self {
        self.folders.push(folder.into());
        self
    }

    /// Whether `mail` came from one of the folders named, if any.
    fn in_folder(&self, mail: &Mail) -> bool {
        self.folders.is_empty()
            || self.folders.iter().any(|f| match f {
                Folder::Named(name) => {
                    same_mailbox(name, mail.mailbox())
                        || matches!(mail.folder(), Some(Folder::Named(n)) if same_mailbox(n, name))
                }
                Folder::SpecialUse(_) => mail.folder() == Some(f),
            })
    }

    /// Whether the recipient is the only condition (or there is none): a
    /// mail its session's recipient index selected for it then matches,
    /// and its subscriber need not keep the filter (issue 14: memory per
    /// idle subscriber). Destructures `self`, so that a condition added
    /// later does not compile here until it is considered.
    pub(crate) fn only_recipient(&self) -> bool {
        let Filter {
            to: _,
            from_contains,
            subject_contains,
            since,
            max_age,
            clock_skew: _,
            after,
            folders,
        } = self;
        from_contains.is_none()
            && subject_contains.is_none()
            && since.is_none()
            && max_age.is_none()
            && after.is_none()
            && folders.is_empty()
    }

    /// Whether `mail` meets every condition, `now` being the current time
    /// for [`Filter::max_age`].
    ///
    /// The time conditions compare [`Mail::received_at`]: the server's
    /// `INTERNALDATE`, or the `Date` header when the server gave none, at
    /// whole seconds and with the clock skew allowance described at
    /// [`Filter::since`]. A mail with neither date passes the time
    /// conditions: it is new mail the session just saw arrive, and dropping
    /// it would lose it.
    pub fn matches(&self, mail: &Mail, now: SystemTime) -> bool {
        if !self.in_folder(mail) {
            return false;
        }
        if let Some(to) = &self.to
            && !mail.recipients().iter().any(|r| r == to)
        {
            return false;
        }
        if let Some(needle) = &self.from_contains
            && !needle.is_empty()
            && !mail
                .senders_folded()
                .iter()
                .any(|s| s.contains(needle.as_str()))
        {
            return false;
        }
        if let Some(needle) = &self.subject_contains
            && !needle.is_empty()
            && !mail
                .subject_folded()
                .is_some_and(|s| s.contains(needle.as_str()))
        {
            return false;
        }
        if let (Some(earliest), Some(at)) = (self.earliest(now), mail.received_at())
            && !self.received_in_time(at, earliest)
        {
            return false;
        }
        if let Some(after) = &self.after
            && !after.precedes(mail)
        {
            return false;
        }
        true
    }

    /// Whether a mail received at `at` is recent enough for `earliest`:
    /// `floor(at) >= floor(earliest - clock_skew)`. An allowance reaching
    /// before any time the clock can represent is no bound at all.
    fn received_in_time(&self, at: SystemTime, earliest: SystemTime) -> bool {
        floor_secs(at) >= floor_secs(self.allowing_skew(earliest))
    }

    /// `t` less the clock skew allowance (the epoch's start when that is
    /// before any time the clock can represent).
    fn allowing_skew(&self, t: SystemTime) -> SystemTime {
        t.checked_sub(self.clock_skew).unwrap_or(UNIX_EPOCH)
    }

    /// The oldest INTERNALDATE this filter can accept at `now`: the
    /// [`Filter::earliest`] time less the clock skew allowance. A session
    /// looks back this far for mail from before it started.
    pub(crate) fn reaches_back_to(&self, now: SystemTime) -> Option<SystemTime> {
        self.earliest(now).map(|t| self.allowing_skew(t))
    }

    /// Checks the filter before it is used: CR, LF or NUL in any string is
    /// refused with [`crate::Error::InvalidInput`] (such a value can never
    /// be sent to a server, for instance in a SEARCH), and an empty `to`
    /// address with [`crate::Error::InvalidConfig`].
    pub fn validate(&self) -> Result<(), crate::Error> {
        let strings = [
            ("filter to", &self.to),
            ("filter from_contains", &self.from_contains),
            ("filter subject_contains", &self.subject_contains),
        ];
        for (field, value) in strings {
            if let Some(v) = value {
                check_value(field, v.as_bytes())?;
            }
        }
        for f in &self.folders {
            if let Folder::Named(n) = f {
                check_value("filter folder", n.as_bytes())?;
            }
        }
        if self.to.as_deref().is_some_and(str::is_empty) {
            return Err(crate::Error::InvalidConfig(
                "filter `to` address is empty".into(),
            ));
        }
        Ok(())
    }

    /// How far back this filter wants mail: the later of
    /// [`Filter::since`] and `now - max_age`, or `None` if neither is set
    /// (nor a `max_age` so large that `now - max_age` is before any time
    /// the system clock can represent).
    pub fn earliest(&self, now: SystemTime) -> Option<SystemTime> {
        let by_age = self.max_age.and_then(|age| now.checked_sub(age));
        match (self.since, by_age) {
            (Some(since), Some(by_age)) => Some(since.max(by_age)),
            (since, by_age) => since.or(by_age),
        }
    }
}

/// Whole seconds since the Unix epoch, rounded down (towards the past,
/// also before the epoch).
fn floor_secs(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::from(d.as_secs()),
        Err(e) => {
            let d = e.duration();
            -i128::from(d.as_secs()) - i128::from(d.subsec_nanos() > 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2024-01-01 10:00:00 UTC.
    const DATE_HEADER: u64 = 1_704_103_200;

    fn message(with_date: bool) -> Vec<u8> {
        let date = if with_date {
            "Date: Mon, 01 Jan 2024 12:00:00 +0200\r\n"
        } else {
            ""
        };
        format!(
            "{date}From: =?UTF-8?Q?=C3=89quipe_Service?= <NoReply@Service.test>\r\n\
             To: \"Task, One\" <Task1@X.test>\r\n\
             Delivered-To: catchall@x.test\r\n\
             X-Original-To: task2@x.test\r\n\
             Subject: Your VERIFICATION code: 482913\r\n\
             \r\n\
             body\r\n"
        )
        .into_bytes()
    }

    /// A mail with a Date header and the given INTERNALDATE.
    fn mail(internal: Option<SystemTime>) -> Mail {
        Mail::parse(1, 1, "INBOX", internal, message(true), false)
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = Filter::new();
        assert_eq!(f.recipient(), None);
        assert_eq!(f.earliest(at(0)), None);
        assert!(f.matches(&mail(None), at(0)));
        let garbage = Mail::parse(1, 1, "INBOX", None, b"\x00\xff".to_vec(), false);
        assert!(f.matches(&garbage, SystemTime::now()));
        assert!(f.validate().is_ok());
    }

    #[test]
    fn to_matches_any_recipient_exactly() {
        let m = mail(None);
        let now = SystemTime::now();
        for addr in [
            "task1@x.test",
            "TASK1@x.TEST",
            "catchall@x.test",
            "Task2@X.Test",
            " task2@x.test\t",
        ] {
            assert!(Filter::new().to(addr).matches(&m, now), "{addr}");
        }
        for addr in [
            "task1@x.tes",
            "ask1@x.test",
            "task1",
            "x.test",
            "task3@x.test",
            "noreply@service.test",
        ] {
            assert!(!Filter::new().to(addr).matches(&m, now), "{addr}");
        }
        assert_eq!(
            Filter::new().to(" Task1@X.test").recipient(),
            Some("task1@x.test")
        );
    }

    #[test]
    fn from_contains_matches_address_or_name() {
        let m = mail(None);
        let now = SystemTime::now();
        for needle in [
            "noreply@service.test",
            "SERVICE.TEST",
            "reply",
            "équipe",
            "ÉQUIPE SERV",
            "",
        ] {
            assert!(
                Filter::new().from_contains(needle).matches(&m, now),
                "{needle}"
            );
        }
        for needle in ["task1", "other.test", "service <noreply"] {
            assert!(
                !Filter::new().from_contains(needle).matches(&m, now),
                "{needle}"
            );
        }
    }

    #[test]
    fn subject_contains_is_a_case_insensitive_substring() {
        let m = mail(None);
        let now = SystemTime::now();
        for needle in ["verification", "Your Verification Code", "482913", ""] {
            assert!(
                Filter::new().subject_contains(needle).matches(&m, now),
                "{needle}"
            );
        }
        for needle in ["reset", "482914"] {
            assert!(
                !Filter::new().subject_contains(needle).matches(&m, now),
                "{needle}"
            );
        }
        let no_subject = Mail::parse(
            1,
            1,
            "INBOX",
            None,
            b"To: a@x.test\r\n\r\nb".to_vec(),
            false,
        );
        assert!(
            !Filter::new()
                .subject_contains("x")
                .matches(&no_subject, now)
        );
        assert!(Filter::new().subject_contains("").matches(&no_subject, now));
    }

    #[test]
    fn unicode_case_folding_of_subjects() {
        let raw = "Subject: =?UTF-8?B?0JLQsNGIINCa0J7QlA==?=\r\n\r\nb"
            .as_bytes()
            .to_vec();
        let m = Mail::parse(1, 1, "INBOX", None, raw, false);
        assert_eq!(m.subject(), Some("Ваш КОД"));
        assert!(Filter::new().subject_contains("ваш код").matches(&m, at(0)));
        assert!(Filter::new().subject_contains("ВАШ Код").matches(&m, at(0)));
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn default_clock_skew_is_the_configs() {
        assert_eq!(Filter::new().clock_skew, Config::default().clock_skew);
        assert_eq!(Filter::default().clock_skew, Duration::from_secs(2));
    }

    #[test]
    fn since_uses_internal_date_with_the_skew_allowance() {
        let m = mail(Some(at(2_000_000_000)));
        let now = at(2_000_000_100);
        let since = |t| Filter::new().since(t).matches(&m, now);
        assert!(since(at(1_999_999_999)));
        assert!(since(at(2_000_000_000)));
        // The same second: INTERNALDATE has no fraction (issue 9 item 3).
        assert!(since(at(2_000_000_000) + ms(900)));
        assert!(since(at(2_000_000_000) + ms(999)));
        // The server's clock up to 2 s behind.
        assert!(since(at(2_000_000_001)));
        assert!(since(at(2_000_000_002) + ms(999)));
        assert!(!since(at(2_000_000_003)));
        assert!(!since(at(2_000_000_100)));
        // The Date header (2024) is ignored when INTERNALDATE is known.
        assert!(
            !Filter::new()
                .since(at(DATE_HEADER))
                .matches(&mail(Some(at(DATE_HEADER - 3))), now)
        );
    }

    #[test]
    fn since_without_skew_still_compares_whole_seconds() {
        let exact = |t, received| {
            Filter::new()
                .with_clock_skew(Duration::ZERO)
                .since(t)
                .matches(&mail(Some(received)), at(2_000_000_100))
        };
        assert!(exact(at(2_000_000_000), at(2_000_000_000)));
        assert!(exact(at(2_000_000_000) + ms(999), at(2_000_000_000)));
        assert!(!exact(at(2_000_000_001), at(2_000_000_000)));
        // A received time with a fraction is floored too.
        assert!(exact(
            at(2_000_000_000) + ms(700),
            at(2_000_000_000) + ms(500)
        ));
        assert!(!exact(at(2_000_000_001), at(2_000_000_000) + ms(999)));
    }

    #[test]
    fn a_larger_skew_reaches_further_back() {
        let m = mail(Some(at(2_000_000_000)));
        let f = |skew| {
            Filter::new()
                .with_clock_skew(Duration::from_secs(skew))
                .since(at(2_000_000_010))
        };
        assert!(!f(9).matches(&m, at(2_000_000_100)));
        assert!(f(10).matches(&m, at(2_000_000_100)));
        // An allowance before the clock's range is no bound at all.
        assert!(
            Filter::new()
                .with_clock_skew(Duration::MAX)
                .since(at(2_000_000_010))
                .matches(&mail(Some(at(0))), at(2_000_000_100))
        );
    }

    #[test]
    fn whole_seconds_before_the_epoch_round_down() {
        assert_eq!(floor_secs(UNIX_EPOCH), 0);
        assert_eq!(floor_secs(UNIX_EPOCH + ms(1_500)), 1);
        assert_eq!(floor_secs(UNIX_EPOCH - ms(1_500)), -2);
        assert_eq!(floor_secs(UNIX_EPOCH - ms(2_000)), -2);
        assert_eq!(floor_secs(UNIX_EPOCH - ms(1)), -1);
        let pre_epoch = mail(Some(UNIX_EPOCH - ms(1_500)));
        let f = Filter::new().with_clock_skew(Duration::ZERO);
        assert!(
            f.clone()
                .since(UNIX_EPOCH - ms(1_999))
                .matches(&pre_epoch, at(0))
        );
        assert!(!f.since(UNIX_EPOCH - ms(1_000)).matches(&pre_epoch, at(0)));
    }

    #[test]
    fn since_falls_back_to_date_header() {
        let m = mail(None);
        let now = at(DATE_HEADER + 100);
        assert!(Filter::new().since(at(DATE_HEADER)).matches(&m, now));
        assert!(
            Filter::new()
                .since(at(DATE_HEADER + 2) + ms(500))
                .matches(&m, now)
        );
        assert!(!Filter::new().since(at(DATE_HEADER + 3)).matches(&m, now));
    }

    #[test]
    fn max_age_uses_internal_date_then_date_header() {
        let m = mail(Some(at(2_000_000_000)));
        let f = Filter::new().max_age(Duration::from_secs(60));
        assert!(f.matches(&m, at(2_000_000_060)));
        // 60 s plus the 2 s allowance, at whole seconds.
        assert!(f.matches(&m, at(2_000_000_062) + ms(999)));
        assert!(!f.matches(&m, at(2_000_000_063)));
        // Mail from the "future" (clock skew) is not too old.
        assert!(f.matches(&m, at(1_000)));
        let exact = f.clone().with_clock_skew(Duration::ZERO);
        assert!(exact.matches(&m, at(2_000_000_060) + ms(999)));
        assert!(!exact.matches(&m, at(2_000_000_061)));

        let m = mail(None);
        assert!(f.matches(&m, at(DATE_HEADER + 62)));
        assert!(!f.matches(&m, at(DATE_HEADER + 63)));
    }

    #[test]
    fn mail_without_any_date_passes_time_conditions() {
        let m = Mail::parse(1, 1, "INBOX", None, message(false), false);
        assert_eq!(m.received_at(), None);
        let now = at(3_000_000_000);
        assert!(Filter::new().since(now).matches(&m, now));
        assert!(Filter::new().max_age(Duration::ZERO).matches(&m, now));
        // But the other conditions still apply.
        assert!(
            !Filter::new()
                .since(now)
                .to("nobody@x.test")
                .matches(&m, now)
        );
    }

    #[test]
    fn combinations_must_all_match() {
        let m = mail(Some(at(2_000_000_000)));
        let now = at(2_000_000_030);
        let f = Filter::new()
            .to("task2@x.test")
            .from_contains("service")
            .subject_contains("code")
            .since(at(1_999_999_000))
            .max_age(Duration::from_secs(60));
        assert!(f.matches(&m, now));
        assert!(!f.clone().to("task3@x.test").matches(&m, now));
        assert!(!f.clone().from_contains("bank").matches(&m, now));
        assert!(!f.clone().subject_contains("reset").matches(&m, now));
        assert!(!f.clone().since(at(2_000_000_003)).matches(&m, now));
        assert!(!f.clone().max_age(Duration::from_secs(10)).matches(&m, now));
        assert!(!f.matches(&m, at(2_000_000_063)));
    }

    #[test]
    fn earliest_is_the_later_bound() {
        let now = at(10_000);
        assert_eq!(Filter::new().since(at(5)).earliest(now), Some(at(5)));
        assert_eq!(
            Filter::new()
                .max_age(Duration::from_secs(100))
                .earliest(now),
            Some(at(9_900))
        );
        assert_eq!(
            Filter::new()
                .since(at(5))
                .max_age(Duration::from_secs(100))
                .earliest(now),
            Some(at(9_900))
        );
        assert_eq!(
            Filter::new()
                .since(at(9_950))
                .max_age(Duration::from_secs(100))
                .earliest(now),
            Some(at(9_950))
        );
        assert_eq!(Filter::new().to("a@x.test").earliest(now), None);
        // A max_age beyond what the clock can represent is no bound at all.
        assert_eq!(Filter::new().max_age(Duration::MAX).earliest(now), None);
        assert_eq!(
            Filter::new()
                .since(at(5))
                .max_age(Duration::MAX)
                .earliest(now),
            Some(at(5))
        );
    }

    fn in_box(mailbox: &str, uid_validity: u32, uid: u32, received: Option<u64>) -> Mail {
        Mail::parse(
            uid,
            uid_validity,
            mailbox,
            received.map(at),
            message(false),
            false,
        )
    }

    #[test]
    fn after_a_mail_means_a_higher_uid_of_the_same_uidvalidity() {
        let first = in_box("INBOX", 7, 100, Some(2_000_000_000));
        let f = Filter::new().after(&first);
        let now = at(2_000_000_100);
        assert!(!f.matches(&first, now), "never the given mail itself");
        assert!(f.matches(&in_box("INBOX", 7, 101, Some(2_000_000_000)), now));
        assert!(f.matches(&in_box("INBOX", 7, 5_000, None), now));
        assert!(!f.matches(&in_box("INBOX", 7, 99, Some(2_000_000_050)), now));
        // A higher UID counts even if its date is earlier (APPEND with an
        // old INTERNALDATE).
        assert!(f.matches(&in_box("INBOX", 7, 102, Some(1_000)), now));
        // "INBOX" is case-insensitive; other names are not.
        assert!(f.matches(&in_box("inbox", 7, 101, None), now));
        let spam = Filter::new().after(&in_box("Spam", 7, 100, None));
        assert!(!spam.matches(&in_box("spam", 7, 101, None), now));
        assert!(spam.matches(&in_box("Spam", 7, 101, None), now));
    }

    #[test]
    fn after_never_matches_another_mailbox() {
        let first = in_box("INBOX", 7, 100, Some(2_000_000_000));
        let f = Filter::new().after(&first);
        let now = at(2_000_000_100);
        assert!(!f.matches(&in_box("Archive", 7, 101, Some(2_000_000_050)), now));
        assert!(!f.matches(&in_box("Archive", 8, 1, Some(2_000_000_050)), now));
    }

    #[test]
    fn after_across_uidvalidity_goes_by_arrival() {
        let first = in_box("INBOX", 7, 100, Some(2_000_000_000));
        let f = Filter::new().after(&first);
        let now = at(2_000_000_100);
        // The mailbox was recreated: UIDs started over.
        assert!(f.matches(&in_box("INBOX", 8, 1, Some(2_000_000_000)), now));
        assert!(f.matches(&in_box("INBOX", 8, 1, Some(2_000_000_001)), now));
        assert!(!f.matches(&in_box("INBOX", 8, 500, Some(1_999_999_999)), now));
        // Unknown dates cannot tell: the mail passes rather than be lost.
        assert!(f.matches(&in_box("INBOX", 8, 1, None), now));
        let undated = Filter::new().after(&in_box("INBOX", 7, 100, None));
        assert!(undated.matches(&in_box("INBOX", 8, 1, Some(1_000)), now));
        assert!(!undated.matches(&in_box("INBOX", 7, 100, Some(1_000)), now));
    }

    #[test]
    fn after_combines_with_the_other_conditions() {
        let first = in_box("INBOX", 7, 100, Some(2_000_000_000));
        let second = in_box("INBOX", 7, 101, Some(2_000_000_030));
        let now = at(2_000_000_060);
        let recent = Filter::new()
            .to("task2@x.test")
            .max_age(Duration::from_secs(600));
        assert!(recent.matches(&first, now) && recent.matches(&second, now));
        let next = recent.clone().after(&first);
        assert!(!next.matches(&first, now));
        assert!(next.matches(&second, now));
        assert!(!next.clone().to("task3@x.test").matches(&second, now));
        assert!(!next.max_age(Duration::from_secs(10)).matches(&second, now));
        // It is no time condition: the session's look-back and replay
        // window are driven by since/max_age only.
        assert_eq!(Filter::new().after(&first).earliest(now), None);
        assert!(Filter::new().after(&first).validate().is_ok());
    }

    #[test]
    fn validate_refuses_cr_lf_nul() {
        let bad = ["a\r@x.test", "a@x.test\r\n", "a\n", "a\0b"];
        for v in bad {
            for (f, field) in [
                (Filter::new().to(v), "filter to"),
                (Filter::new().from_contains(v), "filter from_contains"),
                (Filter::new().subject_contains(v), "filter subject_contains"),
            ] {
                match f.validate() {
                    Err(Error::InvalidInput(e)) => assert_eq!(e.field, field, "{v:?}"),
                    other => panic!("{v:?} {field}: {other:?}"),
                }
            }
        }
        assert!(matches!(
            Filter::new().to("").validate(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Filter::new().to(" \t").validate(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(
            Filter::new()
                .to("Task1@x.test")
                .from_contains("Équipe")
                .subject_contains("")
                .since(at(0))
                .max_age(Duration::from_secs(1))
                .validate()
                .is_ok()
        );
    }

    /// A folder condition: by name (INBOX case-insensitive) against
    /// `Mail::mailbox`, by special use against the credential's folder;
    /// several folders are alternatives; none means any folder.
    #[test]
    fn folders_are_alternatives_by_name_or_special_use() {
        use crate::SpecialUse;
        let raw = b"Subject: s\r\nTo: a@x\r\n\r\nbody".to_vec();
        let now = SystemTime::now();
        let inbox = Mail::parse(1, 1, "INBOX", None, raw.clone(), false)
            .with_folder(Folder::Named("INBOX".into()));
        let spam = Mail::parse(1, 1, "[Gmail]/Spam", None, raw.clone(), false)
            .with_folder(Folder::SpecialUse(SpecialUse::Junk));
        let plain = Mail::parse(1, 1, "Junk", None, raw, false);
        assert!(Filter::new().matches(&spam, now));
        let junk = Filter::new().folder(SpecialUse::Junk);
        assert!(junk.matches(&spam, now));
        assert!(!junk.matches(&inbox, now));
        // A special use is what the credential named, not a name guess.
        assert!(!junk.matches(&plain, now));
        let named = Filter::new().folder("inbox");
        assert!(named.matches(&inbox, now));
        assert!(!named.matches(&spam, now));
        assert!(Filter::new().folder("[Gmail]/Spam").matches(&spam, now));
        let either = Filter::new().folder("INBOX").folder(SpecialUse::Junk);
        assert!(either.matches(&inbox, now) && either.matches(&spam, now));
        assert!(!either.matches(&plain, now));
        assert!(matches!(
            Filter::new().folder("a\r\nb").validate(),
            Err(Error::InvalidInput(_))
        ));
    }
}
