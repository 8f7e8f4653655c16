//! Running the workspace's built binaries from tests: where they are, a temp
//! config for them, and a child process whose output can be waited on.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::wait::POLL_EVERY;

/// The marker [`Proc::wait_listening`] looks for.
const LISTENING_ON: &str = "listening on ";
/// Inherited variables with this prefix are removed from a child's
/// environment, so a developer's shell cannot change what a test runs.
const ENV_PREFIX: &str = "TETHER_";

/// Path of binary `name` built in the same target dir as the running test
/// (`target/debug/<name>`; tests run from `target/debug/deps/`).
///
/// Panics, naming `cargo build --workspace --bins`, if it was not built.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("cannot find the running test's executable: {e}"),
    };
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "binary `{name}` not found at {}; build it first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

fn command(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin_path(bin));
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(ENV_PREFIX) {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v))));
    cmd
}

/// Runs binary `bin` to completion; returns (exit code, stdout, stderr).
/// A process killed by a signal reports exit code -1.
pub fn run_to_end(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = match command(bin, args, env).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run `{bin}`: {e}"),
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// === TempConfig ===

/// A TOML config written into a fresh temp dir, removed with the value.
#[derive(Debug)]
pub struct TempConfig {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempConfig {
    /// Writes `toml` to `tether.toml` in a new temp dir.
    pub fn new(toml: &str) -> TempConfig {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("cannot create a temp dir: {e}"),
        };
        let path = dir.path().join("tether.toml");
        if let Err(e) = std::fs::write(&path, toml) {
            panic!("cannot write {}: {e}", path.display());
        }
        TempConfig { dir, path }
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp dir holding it, for files that sit beside it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file's path as a `&str`, for argument lists.
    pub fn path_str(&self) -> &str {
        match self.path.to_str() {
            Some(s) => s,
            None => panic!("temp path {} is not UTF-8", self.path.display()),
        }
    }
}

// === Proc ===

/// A child process whose stdout and stderr are captured line by line (both
/// into one list, in arrival order). Killed when dropped.
#[derive(Debug)]
pub struct Proc {
    bin: String,
    child: Mutex<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    /// Output pipes still open; 0 means nothing more will be captured.
    open_pipes: Arc<AtomicUsize>,
}

impl Proc {
    /// Starts binary `bin` (a name for [`bin_path`]) with `args`, stdin
    /// null, and `env` added to the inherited environment minus every
    /// `TETHER_*` variable.
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::start(bin, command(bin, args, env))
    }

    /// Like [`spawn`](Proc::spawn), run through `wrapper` (a program and
    /// its arguments that exec the rest, such as `setpriv --reuid=65534
    /// --regid=65534 --clear-groups`): the wrapper is started with the
    /// binary's path and `args` after its own. A wrapper that execs keeps
    /// the pid, so [`pid`](Proc::pid) and [`kill`](Proc::kill) reach the
    /// binary.
    pub fn spawn_wrapped(wrapper: &[&str], bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let Some((program, wrapper_args)) = wrapper.split_first() else {
            return Proc::spawn(bin, args, env);
        };
        let inner = command(bin, args, env);
        let mut cmd = Command::new(program);
        cmd.args(wrapper_args)
            .arg(inner.get_program())
            .args(inner.get_args())
            .stdin(Stdio::null());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        Proc::start(bin, cmd)
    }

    fn start(bin: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => panic!("cannot start `{bin}`: {e}"),
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let open_pipes = Arc::new(AtomicUsize::new(0));
        if let Some(out) = child.stdout.take() {
            capture(out, &lines, &open_pipes);
        }
        if let Some(err) = child.stderr.take() {
            capture(err, &lines, &open_pipes);
        }
        Proc {
            bin: bin.to_owned(),
            child: Mutex::new(child),
            lines,
            open_pipes,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// Everything captured so far, one line per line.
    pub fn output(&self) -> String {
        self.captured().join("\n")
    }

    /// The lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.captured().clone()
    }

    /// How many lines were captured so far; a mark for
    /// [`wait_for_line_after`](Proc::wait_for_line_after).
    pub fn line_count(&self) -> usize {
        self.captured().len()
    }

    /// Waits (polling, up to `deadline`) for an output line containing
    /// `needle` and returns it. Panics with the captured output if the
    /// deadline passes or the process exits first.
    pub async fn wait_for_line(&self, needle: &str, deadline: Duration) -> String {
        self.wait_for_line_after(0, needle, deadline).await
    }

    /// Like [`wait_for_line`](Proc::wait_for_line), looking only at lines
    /// from index `mark` on (see [`line_count`](Proc::line_count)).
    pub async fn wait_for_line_after(
        &self,
        mark: usize,
        needle: &str,
        deadline: Duration,
    ) -> String {
        let what = format!("a line containing {needle:?}");
        self.wait_for(&what, mark, deadline, |line| line.contains(needle))
            .await
    }

    /// Waits for a line containing both `listening on ` and `what` (e.g.
    /// `"grpc"` or `"http"`) and returns the first `IP:PORT` after
    /// `listening on `, as in `proxy http listening on 127.0.0.1:43211`.
    pub async fn wait_listening(&self, what: &str, deadline: Duration) -> SocketAddr {
        let desc = format!("a line containing {LISTENING_ON:?} and {what:?}");
        let line = self
            .wait_for(&desc, 0, deadline, |line| {
                line.contains(LISTENING_ON) && line.contains(what)
            })
            .await;
        match listen_addr(&line) {
            Some(addr) => addr,
            None => panic!(
                "`{}`: no IP:PORT after {LISTENING_ON:?} in line {line:?}; output:\n{}",
                self.bin,
                self.output()
            ),
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGHUP (a reload); panics if it cannot be sent.
    pub fn reload(&self) {
        let pid = self.pid().to_string();
        match Command::new("kill")
            .args(["-HUP", &pid])
            .stdin(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("`kill -HUP {pid}` failed: {status}"),
            Err(e) => panic!("cannot run `kill -HUP {pid}`: {e}"),
        }
    }

    /// Sends SIGTERM (through `kill -TERM`), unless the process has exited.
    pub fn terminate(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .stdin(Stdio::null())
            .status();
        match sent {
            Ok(status) if status.success() => {}
            // It may have exited between the check and the signal.
            _ if self.try_exit().is_some() => {}
            Ok(status) => panic!("`kill -TERM {pid}` failed: {status}"),
            Err(e) => panic!("cannot run `kill -TERM {pid}`: {e}"),
        }
    }

    /// Waits up to `deadline` for the process to exit; `None` if it did not.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if start.elapsed() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    async fn wait_for(
        &self,
        what: &str,
        mark: usize,
        deadline: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        // Processes run on the wall clock, so deadlines do too.
        let start = Instant::now();
        loop {
            // Read "all output is in" before searching, so a line captured
            // just before the pipes closed is still seen.
            let drained = self.open_pipes.load(Ordering::SeqCst) == 0;
            let found = self
                .captured()
                .iter()
                .skip(mark)
                .find(|line| pred(line))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            if drained && let Some(status) = self.try_exit() {
                panic!(
                    "`{}` exited ({status}) before printing {what}; output:\n{}",
                    self.bin,
                    self.output()
                );
            }
            if start.elapsed() >= deadline {
                panic!(
                    "`{}` did not print {what} within {deadline:?}; output:\n{}",
                    self.bin,
                    self.output()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn captured(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Appends every line read from `pipe` to `lines` on a background thread.
fn capture(
    pipe: impl Read + Send + 'static,
    lines: &Arc<Mutex<Vec<String>>>,
    open_pipes: &Arc<AtomicUsize>,
) {
    let lines = Arc::clone(lines);
    let open_pipes = Arc::clone(open_pipes);
    open_pipes.fetch_add(1, Ordering::SeqCst);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            }
        }
        open_pipes.fetch_sub(1, Ordering::SeqCst);
    });
}

/// The first `IP:PORT` token after `listening on ` in `line`; a scheme
/// prefix and trailing punctuation around the token are ignored.
fn listen_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find(LISTENING_ON)? + LISTENING_ON.len();
    line[start..].split_whitespace().find_map(|token| {
        let token = token
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_start_matches(|c: char| !c.is_ascii_alphanumeric() && c != '[')
            .trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        token.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::listen_addr;

    #[test]
    fn finds_the_address_after_listening_on() {
        let addr = |line| listen_addr(line).map(|a| a.to_string());
        assert_eq!(
            addr("INFO proxy http listening on 127.0.0.1:43211").as_deref(),
            Some("127.0.0.1:43211")
        );
        assert_eq!(
            addr("grpc listening on http://127.0.0.1:5, pid 3").as_deref(),
            Some("127.0.0.1:5")
        );
        assert_eq!(
            addr("listening on (grpc) [::1]:80.").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(addr("listening on nothing"), None);
        assert_eq!(addr("127.0.0.1:80 is where we are"), None);
    }
}
