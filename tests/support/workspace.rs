//! The workspace's command-line programs (`emap` of crates/emap-cli,
//! `emap-bridge` of crates/emap-nats) for tests and examples of other
//! packages, which cargo gives no `CARGO_BIN_EXE_<name>` for theirs.
//!
//! [`binary`] builds both once per process with the cargo that builds the
//! caller, into the same target directory, with the options of the CI run
//! (`cargo test --workspace --all-features`): there they are already built
//! and the call only checks that; run alone, the first call builds them.
//! The same options matter: cargo unifies features over the packages it
//! builds, and other options would build a second copy of half the tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The programs [`binary`] builds: each with the test target of its package
/// that makes cargo build it.
const PROGRAMS: &[(&str, &str)] = &[("emap", "cli"), ("emap-bridge", "bridge")];

/// `<target>/<profile>/<name>` for `name` in [`PROGRAMS`], built once per
/// process (see the module docs). Panics with cargo's output when the
/// build fails.
pub fn binary(name: &str) -> PathBuf {
    assert!(
        PROGRAMS.iter().any(|(p, _)| *p == name),
        "{name} is not one of the workspace's programs"
    );
    profile_dir().join(name)
}

/// The profile directory the programs are in, after building them once.
fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // A test runs as <target>/<profile>/deps/<name>-<hash>, an example
        // as <target>/<profile>/examples/<name>.
        let exe = std::env::current_exe().expect("the running program's path");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("<target>/<profile>")
            .to_owned();
        let target = profile.parent().expect("<target>");
        let mut cargo = Command::new(env!("CARGO"));
        // Without what cargo sets for the caller (CARGO_PKG_NAME,
        // CARGO_MANIFEST_DIR, ...): build scripts (ring's) rerun when they
        // change, which would rebuild half the tree here and again in the
        // next top-level cargo run.
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || name.starts_with("CARGO_BIN_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                cargo.env_remove(&var);
            }
        }
        cargo.args([
            "test",
            "--no-run",
            "--quiet",
            "--workspace",
            "--all-features",
        ]);
        for (_, test) in PROGRAMS {
            cargo.args(["--test", test]);
        }
        cargo
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target);
        if profile.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let out = cargo.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "building the workspace's programs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, _) in PROGRAMS {
            let bin = profile.join(name);
            assert!(bin.exists(), "{} after the build", bin.display());
        }
        profile
    })
}

/// The directory of the workspace's `Cargo.toml`: the nearest one above
/// the caller's package that declares `[workspace]`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
        })
        .expect("a workspace Cargo.toml above the package")
        .to_owned()
}
