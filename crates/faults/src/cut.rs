//! Cutting one local process off the network: it runs as another uid
//! (`setpriv`) and iptables drops its packets (see `../shared/MACHINE.md`).
//! Needs root and iptables; [`available`] says whether this machine can,
//! so a scenario that cannot reports itself as not run instead of failing.
//!
//! Every rule carries the comment `tether-faults-<pid>`; a [`Cut`] deletes
//! its rules when healed or dropped (a panicking scenario too), and rules
//! left by a process that no longer runs (killed mid-cut) are swept before
//! the next cut.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use tether_testkit::{TempConfig, bin_path};
use tokio::sync::{Mutex, MutexGuard};

/// The uid (and gid) a cut-off process runs as: `nobody`.
pub const UID: u32 = 65534;

/// What runs a binary as [`UID`] with no supplementary groups.
pub const AS_UID: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

const COMMENT_PREFIX: &str = "tether-faults-";

/// Rules match the uid, not one process: scenarios that cut run one at a
/// time in this process (the quick tests run in parallel threads).
pub async fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(())).lock().await
}

/// `Ok` if this machine can cut a process off: running as root, iptables
/// inserts and deletes an owner-matching rule, and `setpriv` runs the
/// built checker as [`UID`] (its directories are open to that uid).
/// Otherwise why not, for the report.
pub fn available() -> Result<(), String> {
    let uid = run("id", &["-u"]).map_err(|e| format!("cannot run `id -u`: {e}"))?;
    if uid.trim() != "0" {
        return Err(format!(
            "needs root for iptables and setpriv (running as uid {})",
            uid.trim()
        ));
    }
    let probe = owner_rule(Some(UID), Some(9));
    iptables("-I", &probe).map_err(|e| format!("iptables cannot insert a rule: {e}"))?;
    iptables("-D", &probe).map_err(|e| format!("iptables cannot delete a rule: {e}"))?;
    let checker = bin_path("tether-checker");
    let checker = checker.to_string_lossy();
    let mut args: Vec<&str> = AS_UID[1..].to_vec();
    args.extend([&*checker, "--version"]);
    run(AS_UID[0], &args).map_err(|e| {
        format!("`setpriv` cannot run {checker} as uid {UID} (directory permissions?): {e}")
    })?;
    Ok(())
}

/// Makes `config` (and its temp dir) readable by [`UID`].
pub fn share(config: &TempConfig) {
    use std::os::unix::fs::PermissionsExt as _;
    for (path, mode) in [(config.dir(), 0o755), (config.path(), 0o644)] {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            panic!("cannot chmod {}: {e}", path.display());
        }
    }
}

/// iptables rules in force; deleted by [`heal`](Cut::heal) or on drop.
#[derive(Debug, Default)]
pub struct Cut {
    rules: Vec<Vec<String>>,
}

impl Cut {
    /// No rule yet; sweeps rules a dead earlier run left behind.
    pub fn new() -> Cut {
        sweep_stale();
        Cut::default()
    }

    /// Drops every TCP packet [`UID`] sends to `127.0.0.1:port`, for each
    /// port: it cannot connect there, and a connection it holds goes
    /// silent.
    pub fn uid_to_ports(&mut self, ports: &[u16]) -> &mut Cut {
        for &port in ports {
            self.add(owner_rule(Some(UID), Some(port)));
        }
        self
    }

    /// Drops every TCP packet [`UID`] sends to 127.0.0.1: its probes and
    /// its answers to anyone (a server it runs goes silent).
    pub fn uid_everywhere(&mut self) -> &mut Cut {
        self.add(owner_rule(Some(UID), None));
        self
    }

    /// Drops every TCP packet anyone sends to `127.0.0.1:port`: nobody
    /// reaches the server there.
    pub fn anyone_to_port(&mut self, port: u16) -> &mut Cut {
        self.add(owner_rule(None, Some(port)));
        self
    }

    fn add(&mut self, rule: Vec<String>) {
        if let Err(e) = iptables("-I", &rule) {
            panic!("iptables -I OUTPUT {}: {e}", rule.join(" "));
        }
        self.rules.push(rule);
    }

    /// Deletes every rule; the process reaches everything again.
    pub fn heal(&mut self) {
        for rule in self.rules.drain(..) {
            if let Err(e) = iptables("-D", &rule) {
                eprintln!("tether-faults: cannot delete iptables rule {rule:?}: {e}");
            }
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.heal();
    }
}

/// `-p tcp -d 127.0.0.1 [owner uid] [--dport port] -m comment ... -j DROP`
/// for chain OUTPUT (loopback traffic passes OUTPUT once, at its sender).
fn owner_rule(uid: Option<u32>, port: Option<u16>) -> Vec<String> {
    let mut r: Vec<String> = ["OUTPUT", "-p", "tcp", "-d", "127.0.0.1"]
        .map(str::to_owned)
        .to_vec();
    if let Some(uid) = uid {
        r.extend(["-m", "owner", "--uid-owner"].map(str::to_owned));
        r.push(uid.to_string());
    }
    if let Some(port) = port {
        r.push("--dport".to_owned());
        r.push(port.to_string());
    }
    r.extend(["-m", "comment", "--comment"].map(str::to_owned));
    r.push(format!("{COMMENT_PREFIX}{}", std::process::id()));
    r.extend(["-j", "DROP"].map(str::to_owned));
    r
}

/// Deletes OUTPUT rules tagged by a tether-faults process that is gone.
fn sweep_stale() {
    let Ok(listing) = run("iptables", &["-w", "-S", "OUTPUT"]) else {
        return;
    };
    for line in listing.lines() {
        let Some(pid) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(COMMENT_PREFIX))
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Some(spec) = line.strip_prefix("-A ") {
            let mut args = vec!["-w", "-D"];
            args.extend(spec.split_whitespace());
            match run("iptables", &args) {
                Ok(_) => eprintln!("tether-faults: deleted a stale rule: {line}"),
                Err(e) => eprintln!("tether-faults: cannot delete stale rule {line}: {e}"),
            }
        }
    }
}

fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let mut args = vec!["-w", op];
    args.extend(rule.iter().map(String::as_str));
    run("iptables", &args).map(drop)
}

/// Runs `cmd`; its stdout, or why it failed (with its stderr).
fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> usize {
        let tag = format!("{COMMENT_PREFIX}{}", std::process::id());
        run("iptables", &["-w", "-S", "OUTPUT"])
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&tag))
            .count()
    }

    /// A scenario that panics mid-cut leaves no rule behind, and a rule
    /// left by a run that was killed goes with the next cut. Needs root
    /// and iptables; passes without doing anything otherwise.
    #[test]
    fn rules_go_on_panic_and_stale_ones_are_swept() {
        if let Err(why) = available() {
            eprintln!("skipped: {why}");
            return;
        }
        // Port 9 (discard): nothing listens there.
        let panicked = std::panic::catch_unwind(|| {
            let mut cut = Cut::new();
            cut.uid_to_ports(&[9]).anyone_to_port(9);
            assert_eq!(ours(), 2);
            panic!("a scenario fails mid-cut");
        });
        assert!(panicked.is_err());
        assert_eq!(ours(), 0, "rules left after a panic");

        // A dead run's rule: pid 0 is never a process's.
        let stale = format!("{COMMENT_PREFIX}0");
        let spec = [
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            "9",
            "-m",
            "comment",
            "--comment",
            &stale,
            "-j",
            "DROP",
        ];
        let mut args = vec!["-w", "-I"];
        args.extend(spec);
        run("iptables", &args).expect("insert a stale rule");
        drop(Cut::new());
        let left = run("iptables", &["-w", "-S", "OUTPUT"]).unwrap_or_default();
        if left.contains(&format!("--comment {stale} ")) {
            let mut args = vec!["-w", "-D"];
            args.extend(spec);
            let _ = run("iptables", &args);
            panic!("the stale rule was not swept: {left}");
        }
    }
}
