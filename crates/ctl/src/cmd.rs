//! The subcommands: connect, ask, print.

use std::convert::Infallible;
use std::fmt;
use std::io::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use tether_core::{CheckerState, Gap};

use crate::client::{self, Checker, Remote, ServingStatus, Use};
use crate::watch::{Format, Step, Watcher};
use crate::{admin, checkers, render};

/// Fresh snapshots asked for in a row (no change printed in between) before
/// `watch` gives up on a checker whose versions keep jumping.
const MAX_RESUBSCRIBES: u32 = 3;

/// Standard output was closed (`tetherctl watch | head`): stop quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The answer was printed and it is "no" (not serving, not ready): exit 1
/// with nothing more on standard error.
#[derive(Debug)]
pub struct AnsweredNo;

impl fmt::Display for AnsweredNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the answer was no")
    }
}

impl std::error::Error for AnsweredNo {}

/// `tetherctl serving [SERVICE]`: the standard gRPC health check. Prints the
/// status; success only for `SERVING`.
pub async fn serving(remote: &Remote, service: &str) -> anyhow::Result<()> {
    match client::serving_status(remote, service).await? {
        Some(ServingStatus::Serving) => print("SERVING\n"),
        Some(status) => {
            print(&format!("{}\n", status.as_str_name()))?;
            Err(AnsweredNo.into())
        }
        None => bail!("checker at {remote} knows no service named {service:?}"),
    }
}

/// `tetherctl ready [URL]`: one `GET` of an admin endpoint. Prints the
/// status; success only for `200`.
pub async fn ready(url: &str) -> anyhow::Result<()> {
    let target = admin::parse_url(url)?;
    let (code, reason) = admin::get_status(&target).await?;
    let line = if reason.is_empty() {
        format!("{code}\n")
    } else {
        format!("{code} {reason}\n")
    };
    print(&line)?;
    if code == 200 {
        Ok(())
    } else {
        Err(AnsweredNo.into())
    }
}

/// `tetherctl checkers [URL] [--json]`: a proxy's view of its checkers.
pub async fn checkers(url: &str, json: bool) -> anyhow::Result<()> {
    let mut target = admin::parse_url(url)?;
    if target.path == "/" {
        target.path = checkers::PATH.to_owned();
    }
    let (code, body) = admin::get_body(&target).await?;
    if code != 200 {
        bail!(
            "{}{} answered {code}: {}",
            target.host_header,
            target.path,
            render::sanitize(body.trim())
        );
    }
    if json {
        return print(&body);
    }
    let status: checkers::Status = serde_json::from_str(&body).with_context(|| {
        format!(
            "{}{} is not a proxy's status",
            target.host_header, target.path
        )
    })?;
    print(&checkers::render(&status))
}

/// `tetherctl health [NAME] [--json]`
pub async fn health(remote: &Remote, name: Option<&str>, json: bool) -> anyhow::Result<()> {
    let mut checker = Checker::connect(remote, Use::Query).await?;
    // The checker's own state comes with the whole pool (List), not with
    // one target (Get).
    let (version, targets, state) = match name {
        None => checker.list().await?,
        Some(name) => match checker.get(name).await? {
            Some((version, target)) => (version, vec![target], CheckerState::ok()),
            None => bail!("no target named {name:?}"),
        },
    };
    let now = now_ms();
    let text = if json {
        render::pool_json_pretty(version, &targets)? + "\n"
    } else {
        let line = render::checker_line(&state, now).map(|l| l + "\n");
        line.unwrap_or_default() + &render::table(&targets, now)
    };
    print(&text)
}

/// `tetherctl drain NAME` (`draining = true`) and `tetherctl enable NAME`.
/// Prints the target's state after the call; an unknown name is an error.
pub async fn drain(remote: &Remote, name: &str, draining: bool) -> anyhow::Result<()> {
    let mut checker = Checker::connect(remote, Use::Query).await?;
    let Some(done) = checker.set_draining(name, draining).await? else {
        bail!("no target named {name:?}");
    };
    print(&(render::drain_line(&done.target, done.changed, done.version) + "\n"))
}

/// `tetherctl watch [--json]`: runs until the stream fails (an error) or
/// Ctrl-C (success).
pub async fn watch(remote: &Remote, format: Format) -> anyhow::Result<()> {
    tokio::select! {
        failed = watch_until_error(remote, format) => failed.map(|never| match never {}),
        signal = tokio::signal::ctrl_c() => signal.context("cannot listen for Ctrl-C"),
    }
}

async fn watch_until_error(remote: &Remote, format: Format) -> anyhow::Result<Infallible> {
    let mut checker = Checker::connect(remote, Use::Watch).await?;
    let mut watcher = Watcher::new(format);
    let mut resubscribes = 0;
    loop {
        let mut stream = checker.watch().await?;
        let gap = loop {
            let update = stream.next().await?;
            let is_change = matches!(update.kind, tether_core::UpdateKind::Change(_));
            match watcher.apply(update, now_ms())? {
                Step::Print(text) => {
                    print(&text)?;
                    if is_change {
                        resubscribes = 0;
                    }
                }
                Step::Skip => {}
                Step::Gap(gap) => break gap,
            }
        };
        resubscribes += 1;
        if resubscribes > MAX_RESUBSCRIBES {
            bail!(
                "checker at {remote} keeps skipping versions ({}); giving up",
                describe(gap)
            );
        }
        warn(&format!("{}; asking for a fresh snapshot", describe(gap)));
    }
}

fn describe(gap: Gap) -> String {
    match gap.have {
        Some(have) => format!("missed updates between v{have} and v{}", gap.got),
        None => format!("got change v{} before any snapshot", gap.got),
    }
}

/// Writes to standard output and flushes, so `watch` output shows up at
/// once even through a pipe.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// One `tetherctl: ...` line on standard error. A failure to write it is
/// ignored: there is nowhere left to report it.
pub fn warn(message: &str) {
    let _ = writeln!(io::stderr().lock(), "tetherctl: {message}");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
