//! `examples/login.rs` as a user runs it: exit 0 on a good credential, 1
//! with a one-line reason on a bad one, the password only from the
//! environment.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use support::dovecot;

/// Builds the example (a no-op when `cargo test` already did) and returns
/// its path.
fn example() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--example", "login"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building examples/login.rs failed");
    // tests run from target/<profile>/deps/; examples sit in
    // target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join("login")
}

fn run(args: &[&str], password: &str) -> Output {
    Command::new(example())
        .args(args)
        .env("EMAP_TEST_PASSWORD", password)
        .output()
        .expect("the example runs")
}

#[test]
fn good_and_bad_credentials_give_the_documented_exit_codes() {
    let d = dovecot();
    let u = d.user("cli");
    let port = d.imap_port.to_string();
    let base = [
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "none",
        "--user",
        &u.name,
        "--password-env",
        "EMAP_TEST_PASSWORD",
    ];
    let ok = run(&base, &u.password);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = run(&base, "wrong-password");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one-line reason: {stderr}"
    );
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(!stderr.contains("wrong-password"));

    // Implicit TLS with the test CA as an extra root.
    let tls_port = d.imaps_port.to_string();
    let ca = d.ca_path.to_str().unwrap();
    let tls = run(
        &[
            "--host",
            "localhost",
            "--port",
            &tls_port,
            "--ca-file",
            ca,
            "--user",
            &u.name,
            "--password-env",
            "EMAP_TEST_PASSWORD",
        ],
        &u.password,
    );
    assert_eq!(
        tls.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
}

#[test]
fn a_password_on_the_command_line_is_refused() {
    let out = run(
        &["--host", "127.0.0.1", "--user", "u", "--password", "secret"],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-env"));
}
