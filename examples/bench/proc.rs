//! Process plumbing shared by the servers the benchmark starts: bounded
//! helper commands, free ports, the watchdog that ties a server's process
//! group to the benchmark's life, and the system user that owns the mail.
//!
//! The watchdog is the approach of tests/support/dovecot.rs (which an
//! example cannot import): `sh` leads a new process group, starts the
//! server in the background, blocks reading a pipe whose write end only the
//! benchmark holds, and when the benchmark exits — normally, by panic or
//! SIGKILL — sends SIGTERM to the whole group and removes the temporary
//! directory. No server outlives the benchmark.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a helper command (doveadm, saslpasswd2, useradd) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The system user that owns the mail when running as root (the same one
/// the integration tests use).
pub const MAIL_USER: &str = "emaptest";

const WATCHDOG: &str = r#"
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

/// A server process group kept alive by the benchmark.
pub struct Watchdog {
    child: Child,
}

impl Watchdog {
    /// Runs `argv` under the watchdog with `env`; its output goes to `out`;
    /// `dir` is removed when the server stops.
    pub fn spawn(
        argv: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
        out: &Path,
        dir: &Path,
    ) -> Result<Watchdog, String> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("emap-bench-watchdog")
            .args(argv)
            .env("WD_OUT", out)
            .env("WD_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning the watchdog: {e}"))?;
        Ok(Watchdog { child })
    }

    /// Stops the server group and waits (boundedly) for the cleanup.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
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

/// Runs a command and fails unless it exits 0; returns its stdout.
pub fn run_ok(cmd: Command, timeout: Duration) -> Result<String, String> {
    let name = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    let out = run(cmd, timeout)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{name} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `n` distinct free TCP ports on 127.0.0.1.
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| format!("picking free ports: {e}"))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| format!("picking free ports: {e}"))
        })
        .collect()
}

/// A binary in PATH or the usual sbin directories.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `id <args>`, trimmed.
pub fn id(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("id");
    cmd.args(args);
    run_ok(cmd, COMMAND_TIMEOUT).map(|s| s.trim().to_owned())
}

/// The uid and gid that own the servers' mail: [`MAIL_USER`] (created
/// when missing) as root, else the current user.
pub fn mail_owner() -> Result<(u32, u32), String> {
    let num = |args: &[&str]| -> Result<u32, String> {
        id(args)?.parse().map_err(|e| format!("id {args:?}: {e}"))
    };
    if !is_root() {
        return Ok((num(&["-u"])?, num(&["-g"])?));
    }
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
        let _ = run(cmd, COMMAND_TIMEOUT);
    }
    Ok((num(&["-u", MAIL_USER])?, num(&["-g", MAIL_USER])?))
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

/// Makes `path` (and, with `recursive`, everything below) owned by
/// `uid:gid` when running as root.
pub fn chown(path: &Path, uid: u32, gid: u32, recursive: bool) -> Result<(), String> {
    if !is_root() {
        return Ok(());
    }
    if recursive {
        let mut cmd = Command::new("chown");
        cmd.arg("-R").arg(format!("{uid}:{gid}")).arg(path);
        run_ok(cmd, Duration::from_secs(600)).map(|_| ())
    } else {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))
    }
}

/// Writes a world-readable file via a temporary name and a rename.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A fresh temporary directory (mode 0755), not removed on drop: the
/// watchdog removes it.
pub fn temp_dir(prefix: &str) -> Result<PathBuf, String> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))?
        .keep();
    set_mode(&dir, 0o755)?;
    Ok(dir)
}

/// The last `n` lines of a file (for error messages).
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Established TCP connections whose local port is `port`, read from
/// `/proc/net/tcp` (IPv4): with the server's port, the connections the
/// server holds, counted on the server side.
pub fn established_on_port(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address rem_address st; 01 = ESTABLISHED
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "01"
        })
        .count()
}
