//! Starting a session from a stored position and following its position
//! (`Handle::follow`, `Credential::resume_from`), on the real Dovecot.
//!
//! A process that stores each reported position only after it has dealt
//! with the mail reported before it (the NATS bridge stores it after the
//! publish is acknowledged) and restarts from it must get exactly the mail
//! that arrived while it was away, once; a position under another
//! UIDVALIDITY is void; and a position report never goes back nor passes a
//! mail that was not reported. One test, of a session that fails for
//! good, runs on the scripted mailbox server.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use emap::{Config, Error, Followed, Follower, Handle, Position};
use support::emap::{
    deliver, dovecot_config, dovecot_cred, dovecot_cred_with, fake_cred_with, scripted_config,
    start, stats_of_user,
};
use support::mailbox_server::{Login, MailboxServer};
use support::{EVENTUALLY, TestUser, blocking, dovecot, until_some};

/// The next report of `f`; panics if none comes within [`EVENTUALLY`].
async fn next(f: &mut Follower) -> Followed {
    tokio::time::timeout(EVENTUALLY, f.next())
        .await
        .expect("no report in time")
        .unwrap_or_else(|| panic!("follower ended: {:?}", f.error()))
}

/// Reads reports until a mail with `subject` arrived and the position
/// passed it; returns the subjects of the mails on the way (in order) and
/// the last position, checking on the way that positions never go back
/// and never pass a mail reported later. (A position goes back only when
/// the server's UIDNEXT does, or a special use moves; no test using this
/// makes either happen: see
/// `a_position_follows_a_uidnext_that_went_back_down` for that case.)
async fn follow_until(
    f: &mut Follower,
    subject: &str,
    mut last: Option<Position>,
) -> (Vec<String>, Position) {
    let mut subjects = Vec::new();
    let mut target = None;
    loop {
        match next(f).await {
            Followed::Arrived(mail) => {
                if let Some(p) = &last {
                    assert!(
                        p.uid_validity != mail.uid_validity() || mail.uid() >= p.next_uid,
                        "mail {} reported after the position {p:?} passed it",
                        mail.uid()
                    );
                }
                let s = mail.subject().unwrap_or_default().to_owned();
                if s == subject {
                    target = Some(mail.uid());
                }
                subjects.push(s);
            }
            Followed::Advanced(p) => {
                if let Some(l) = &last
                    && l.uid_validity == p.uid_validity
                {
                    assert!(p.next_uid >= l.next_uid, "went back: {l:?} -> {p:?}");
                }
                assert_eq!(p.folder, "INBOX");
                let passed = target.is_some_and(|t| p.next_uid > t);
                last = Some(p.clone());
                if passed {
                    return (subjects, p);
                }
            }
        }
    }
}

async fn validity_changes(h: &Handle, user: &TestUser) -> u64 {
    stats_of_user(h, &user.name)
        .await
        .map_or(0, |s| s.validity_changes)
}

/// Restarted from the position stored before the restart, a follower gets
/// the mail that arrived in between, each once, and not the mail before.
#[tokio::test]
async fn resume_after_a_restart_delivers_what_arrived_in_between_once() {
    let user = dovecot().user("resume");
    let h = start(dovecot_config());
    let mut f = h.follow(dovecot_cred(&user)).await.expect("follow");
    deliver(&user.name, "before").await;
    let (subjects, stored) = follow_until(&mut f, "before", None).await;
    assert_eq!(subjects, ["before"]);
    drop(f);
    h.shutdown().await;

    for s in ["gap-1", "gap-2", "gap-3"] {
        deliver(&user.name, s).await;
    }

    let h = start(dovecot_config());
    let cred = dovecot_cred(&user).resume_from(vec![stored.clone()]);
    let mut f = h.follow(cred).await.expect("follow again");
    deliver(&user.name, "after").await;
    let (subjects, _) = follow_until(&mut f, "after", Some(stored)).await;
    assert_eq!(subjects, ["gap-1", "gap-2", "gap-3", "after"]);
    assert_eq!(validity_changes(&h, &user).await, 0);
    h.shutdown().await;
}

/// A stored position under another UIDVALIDITY (the mailbox was recreated)
/// is void: the session starts at UIDNEXT, delivers nothing old, and counts
/// the change.
#[tokio::test]
async fn a_position_under_another_uidvalidity_starts_fresh_and_is_counted() {
    let user = dovecot().user("revalid");
    for s in ["old-1", "old-2"] {
        deliver(&user.name, s).await;
    }
    let h = start(dovecot_config());
    let probe = h.follow(dovecot_cred(&user)).await.expect("follow");
    let real = until_some("the session's UIDVALIDITY", async || {
        stats_of_user(&h, &user.name).await?.uid_validity
    })
    .await;
    drop(probe);
    h.shutdown().await;

    let stale = Position {
        folder: "INBOX".into(),
        uid_validity: real.wrapping_add(1),
        next_uid: 1,
    };
    let h = start(dovecot_config());
    let mut f = h
        .follow(dovecot_cred(&user).resume_from(vec![stale]))
        .await
        .expect("follow");
    deliver(&user.name, "new").await;
    let (subjects, p) = follow_until(&mut f, "new", None).await;
    assert_eq!(
        subjects,
        ["new"],
        "old mail delivered under a void position"
    );
    assert_eq!(p.uid_validity, real);
    assert_eq!(validity_changes(&h, &user).await, 1);
    h.shutdown().await;
}

/// Under bursts and a kick (a reconnect with a gap fetch), position
/// reports never go back and never pass a mail reported after them, and
/// every mail is reported once.
#[tokio::test]
async fn positions_never_go_back_nor_pass_a_mail_not_yet_reported() {
    let user = dovecot().user("positions");
    let h = start(Config {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..dovecot_config()
    });
    let mut f = h.follow(dovecot_cred(&user)).await.expect("follow");
    let mut sent = BTreeSet::new();
    let mut last = None;
    let mut seen = Vec::new();
    for round in 0..4 {
        let name = user.name.clone();
        let subjects: Vec<String> = (0..10).map(|i| format!("r{round}-{i}")).collect();
        sent.extend(subjects.iter().cloned());
        let burst = subjects.clone();
        let kick = round == 2;
        blocking(move || {
            for (i, s) in burst.iter().enumerate() {
                let raw = support::mail("sender@emap.test", &name, s, "hello");
                dovecot().deliver(&name, &raw);
                if kick && i == 4 {
                    dovecot().kick(&name);
                }
            }
        })
        .await;
        let (got, p) = follow_until(&mut f, subjects.last().unwrap(), last).await;
        seen.extend(got);
        last = Some(p);
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a mail reported twice: {seen:?}");
    assert_eq!(unique, sent);
    h.shutdown().await;
}

/// The server's UIDNEXT goes back under the same UIDVALIDITY (a restored
/// mailbox): the session follows it down, counted, and reports the lower
/// position — before the mail below the old one that arrives next, and
/// then past it. A position kept at the old height would lie above that
/// mail, and a restart from it would lose it. (Scripted server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_follows_a_uidnext_that_went_back_down() {
    use support::emap::{fake_cred, scripted_config};
    use support::fake::{FakeConn, FakeServer};
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.greet_and_login("IDLE").await;
        if n == 0 {
            c.examine(9, Some(10), Some(1)).await;
            let (tag, _) = c.announce(10).await;
            c.send(FakeConn::fetch_ok(
                &tag,
                &[(10, 10, &support::message("ten"))],
            ))
            .await;
            // The link dies; the mailbox is restored meanwhile.
            c.idle().await;
            return;
        }
        c.examine(2, Some(3), Some(1)).await;
        let (tag, rest) = c.announce(3).await;
        assert!(rest.starts_with("3:3 "), "{rest}");
        c.send(FakeConn::fetch_ok(
            &tag,
            &[(3, 3, &support::message("three"))],
        ))
        .await;
        c.serve().await;
    })
    .await;
    let h = start(scripted_config());
    let mut f = h.follow(fake_cred(server.port)).await.expect("follow");
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("@4") {
        seen.push(match next(&mut f).await {
            Followed::Arrived(m) => m.subject().unwrap_or_default().to_owned(),
            Followed::Advanced(p) => {
                assert_eq!((p.folder.as_str(), p.uid_validity), ("INBOX", 1));
                format!("@{}", p.next_uid)
            }
        });
    }
    assert_eq!(seen, ["@10", "ten", "@11", "@3", "three", "@4"]);
    let st = support::emap::stats_of(&h, server.port).await.unwrap();
    assert_eq!(st.uidnext_regressions, 1);
    h.shutdown().await;
}

/// A stored position names its folder as the credential does, and `INBOX`
/// in any case is INBOX: a position stored as `inbox` resumes INBOX,
/// fetching the gap from it. (Scripted server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_stored_for_inbox_in_lower_case_resumes_inbox() {
    use support::emap::{fake_cred, next_subjects, scripted_config};
    use support::fake::{FakeConn, FakeServer};
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(4, Some(5), Some(1)).await;
        let args = c
            .answer_fetch(
                "UID FETCH",
                &[
                    (3, 3, &support::message("three")),
                    (4, 4, &support::message("four")),
                ],
            )
            .await;
        assert!(args.starts_with("3:* "), "{args}");
        c.serve().await;
    })
    .await;
    let h = start(scripted_config());
    let stored = Position {
        folder: "inbox".into(),
        uid_validity: 1,
        next_uid: 3,
    };
    let mut sub = h
        .subscribe(
            fake_cred(server.port).resume_from(vec![stored]),
            emap::Filter::new(),
        )
        .await
        .unwrap();
    assert_eq!(next_subjects(&mut sub, 2).await, ["three", "four"]);
    assert_eq!(server.accepted(), 1);
    h.shutdown().await;
}

/// A follower that does not keep up is cut off after
/// `Config::follow_capacity` reports — bounded memory — and told so, and
/// no position it got passes a mail it did not get: it resumes from its
/// last stored position and gets the rest, once.
#[tokio::test]
async fn a_follower_that_falls_behind_is_cut_off_and_resumes_without_loss() {
    let user = dovecot().user("overflow");
    let h = start(Config {
        follow_capacity: 4,
        ..dovecot_config()
    });
    let mut f = h.follow(dovecot_cred(&user)).await.expect("follow");
    // The position after the SELECT.
    let Followed::Advanced(start_at) = next(&mut f).await else {
        panic!("a mail before the first position");
    };
    let name = user.name.clone();
    blocking(move || {
        for i in 0..20 {
            let raw = support::mail("sender@emap.test", &name, &format!("m{i}"), "hello");
            dovecot().deliver(&name, &raw);
        }
    })
    .await;
    let stats = until_some("all 20 fetched", async || {
        stats_of_user(&h, &user.name)
            .await
            .filter(|s| s.fetched >= 20)
    })
    .await;
    assert_eq!(stats.fetched, 20);
    let mut got = Vec::new();
    let mut stored = start_at.clone();
    tokio::time::timeout(EVENTUALLY, async {
        while let Some(event) = f.next().await {
            match event {
                Followed::Arrived(m) => got.push(m.subject().unwrap_or_default().to_owned()),
                Followed::Advanced(p) => stored = p,
            }
        }
    })
    .await
    .expect("the follower that fell behind was not cut off");
    assert!(f.overflowed());
    assert!(got.len() <= 4, "{got:?}");
    drop(f);
    h.shutdown().await;

    let h = start(dovecot_config());
    let mut f = h
        .follow(dovecot_cred(&user).resume_from(vec![stored.clone()]))
        .await
        .expect("follow again");
    let (rest, _) = follow_until(&mut f, "m19", Some(stored)).await;
    let all: Vec<String> = got
        .iter()
        .filter(|s| !rest.contains(s))
        .chain(rest.iter())
        .cloned()
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(all, want, "got {got:?} then {rest:?}");
    h.shutdown().await;
}

/// Several folders on one connection: each folder's position is reported
/// under its own name, and a restart from the stored list resumes each
/// folder where it stood: exactly the mail that arrived in INBOX and in
/// Junk while away, once each.
#[tokio::test]
async fn each_folder_resumes_from_its_own_position() {
    use emap::{Folder, SpecialUse};
    use std::collections::BTreeMap;
    let s = dovecot();
    let user = s.user("resumejunk");
    let u = user.clone();
    blocking(move || s.create_junk(&u)).await;
    let junk = Folder::SpecialUse(SpecialUse::Junk);
    let to_junk = |subject: &'static str| {
        let u = user.clone();
        blocking(move || {
            let raw = support::message::mail("sender@emap.test", &u.name, subject, "hello");
            dovecot().append(&u, "Junk", &raw);
        })
    };

    // Follows until every subject in `want` arrived and each folder's
    // position passed its mail; returns the subjects (sorted) and the
    // positions by folder.
    async fn follow_all(
        f: &mut Follower,
        want: &[&str],
        mut stored: BTreeMap<String, Position>,
    ) -> (Vec<String>, BTreeMap<String, Position>) {
        let mut got: Vec<(String, String, u32)> = Vec::new();
        loop {
            let done = want.iter().all(|w| {
                got.iter().any(|(s, folder, uid)| {
                    s == w && stored.get(folder).is_some_and(|p| p.next_uid > *uid)
                })
            });
            if done {
                let mut subjects: Vec<String> = got.into_iter().map(|g| g.0).collect();
                subjects.sort();
                return (subjects, stored);
            }
            match next(f).await {
                Followed::Arrived(m) => {
                    let folder = m.folder().expect("a folder").to_string();
                    if let Some(p) = stored.get(&folder)
                        && p.uid_validity == m.uid_validity()
                    {
                        assert!(m.uid() >= p.next_uid, "{} after {p:?}", m.uid());
                    }
                    got.push((m.subject().unwrap_or_default().to_owned(), folder, m.uid()));
                }
                Followed::Advanced(p) => {
                    if let Some(l) = stored.get(&p.folder)
                        && l.uid_validity == p.uid_validity
                    {
                        assert!(p.next_uid >= l.next_uid, "went back: {l:?} -> {p:?}");
                    }
                    stored.insert(p.folder.clone(), p);
                }
            }
        }
    }

    let h = start(dovecot_config());
    let cred = || dovecot_cred(&user).also_watch(junk.clone());
    let mut f = h.follow(cred()).await.expect("follow");
    deliver(&user.name, "inbox-before").await;
    to_junk("junk-before").await;
    let (got, stored) = follow_all(&mut f, &["inbox-before", "junk-before"], BTreeMap::new()).await;
    assert_eq!(got, ["inbox-before", "junk-before"]);
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        ["INBOX", "\\Junk"],
        "one position per folder, named as the credential names it"
    );
    drop(f);
    h.shutdown().await;

    deliver(&user.name, "inbox-gap").await;
    to_junk("junk-gap").await;

    let h = start(dovecot_config());
    let positions: Vec<Position> = stored.values().cloned().collect();
    let mut f = h
        .follow(cred().resume_from(positions))
        .await
        .expect("follow again");
    deliver(&user.name, "inbox-after").await;
    let (got, _) = follow_all(&mut f, &["inbox-gap", "junk-gap", "inbox-after"], stored).await;
    assert_eq!(got, ["inbox-after", "inbox-gap", "junk-gap"]);
    h.shutdown().await;
}

/// A followed session that fails for good after it started (the password
/// changed, the reconnect is refused) ends its follower with the session's
/// error, not a bare end: the session closes the tap before it ends its
/// subscriptions, and `next` must still wait for the error. On the
/// scripted mailbox server, whose password changes at once (Dovecot's
/// passwd-file is re-read at most once a second).
#[tokio::test]
async fn a_follower_whose_session_fails_ends_with_its_error() {
    let h = start(scripted_config());
    // The error used to be lost only when the follower woke before the
    // keep-alive subscription had ended: a race, so run it many times.
    for round in 0..20 {
        let server = MailboxServer::start(1, 1, Vec::new()).await;
        server.set_login(Login::Password("old".into()));
        let mut f = h
            .follow(fake_cred_with(server.port, "old"))
            .await
            .expect("follow");
        let Followed::Advanced(_) = next(&mut f).await else {
            panic!("a mail before the first position");
        };
        // The password changes; the reconnect forced by a BYE is refused.
        server.set_login(Login::Password("new".into()));
        server.kick();
        let ended =
            tokio::time::timeout(EVENTUALLY, async { while f.next().await.is_some() {} }).await;
        assert!(ended.is_ok(), "round {round}: the follower did not end");
        assert!(!f.overflowed());
        assert!(
            matches!(f.error(), Some(Error::AuthenticationFailed(_))),
            "round {round}: {:?}",
            f.error()
        );
    }
    h.shutdown().await;
}
/// A followed session is never joined, so a dropped follower's session
/// ends at once instead of lingering: following again (what a bridge does
/// after an overflow) leaves one connection to the server, not two.
#[tokio::test]
async fn a_dropped_followers_session_does_not_linger() {
    let user = dovecot().user("followagain");
    let h = start(Config {
        linger: Duration::from_secs(600),
        ..dovecot_config()
    });
    let f = h.follow(dovecot_cred(&user)).await.expect("follow");
    drop(f);
    let _f = h.follow(dovecot_cred(&user)).await.expect("follow again");
    let connections = dovecot()
        .wait_connections_async(&user.name, 1, EVENTUALLY)
        .await;
    assert_eq!(
        connections, 1,
        "connections of the user after following again"
    );
    h.shutdown().await;
}

/// A refused login is remembered for `follow` as for `subscribe`: a loop
/// that follows with a wrong password makes one LOGIN, not one per try.
#[tokio::test]
async fn a_refused_login_is_remembered_for_follow() {
    let user = dovecot().user("followwrong");
    let h = start(dovecot_config());
    let wrong = dovecot_cred_with(&user, "not-the-password");
    for i in 0..3 {
        let res = tokio::time::timeout(EVENTUALLY, h.follow(wrong.clone()))
            .await
            .expect("follow did not answer");
        assert!(
            matches!(res, Err(Error::AuthenticationFailed(_))),
            "follow #{i}: {:?}",
            res.map(|_| ())
        );
    }
    let name = user.name.clone();
    let logins =
        blocking(move || dovecot().settled_login_attempts(&name, Duration::from_millis(500))).await;
    assert_eq!(logins, 1, "LOGIN attempts Dovecot saw for 3 follow calls");
    h.shutdown().await;
}
