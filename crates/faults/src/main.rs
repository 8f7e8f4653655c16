//! `tether-faults [--quick] [--only F1,F7,...] [--doc docs/RELIABILITY.md]`:
//! runs the fault scenarios against the binaries built beside it, prints
//! each outcome, and with `--doc` rewrites the faults section of the doc.
//! Exits 1 if a target was missed (the doc is written either way).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use tether_faults::report::{section, write_doc};
use tether_faults::scenarios::{NOT_DONE, all};
use tether_faults::{Outcome, Size};

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut size = Size::Full;
    let mut only: Option<Vec<String>> = None;
    let mut doc: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => size = Size::Quick,
            "--only" => {
                only = args
                    .next()
                    .map(|s| s.split(',').map(str::to_owned).collect())
            }
            "--doc" => doc = args.next().map(PathBuf::from),
            _ => {
                eprintln!("usage: tether-faults [--quick] [--only F1,F7,...] [--doc PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let started = std::time::Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (id, run) in all() {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == id)) {
            continue;
        }
        eprintln!("== {id} ...");
        let o = run(size).await;
        println!("{}", o.text());
        outcomes.push(o);
    }
    let missed: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.missed(false)
                .into_iter()
                .map(move |m| format!("{}: {m}", o.id))
        })
        .collect();
    if let Some(doc) = doc {
        let profile = std::env::current_exe()
            .ok()
            .and_then(|p| {
                p.parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        let dirty = if output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty()
        {
            ""
        } else {
            " (with uncommitted changes)"
        };
        let header = format!(
            "Measured {} at commit `{}`{dirty} by `make faults` ({profile} binaries, {} size, {:.0} s on a shared 2-core VM). \
             Figures are what clients saw; ✅/❌ compare with the targets of issues 9 and 16 and the catalogue. \
             Loopback only; the load generator and the proxy share the two cores, so latencies are an upper bound.",
            output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            output("git", &["rev-parse", "--short", "HEAD"]),
            if size == Size::Full { "full" } else { "quick" },
            started.elapsed().as_secs_f64()
        );
        let mut body = section(&outcomes, NOT_DONE, &header);
        if !missed.is_empty() {
            body.push_str("\nTargets missed:\n\n");
            for m in &missed {
                body.push_str(&format!("- {m}\n"));
            }
        }
        if let Err(e) = write_doc(&doc, &body) {
            eprintln!("cannot write {}: {e}", doc.display());
            return ExitCode::from(2);
        }
        eprintln!("wrote {}", doc.display());
    }
    if missed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("targets missed:\n  {}", missed.join("\n  "));
        ExitCode::from(1)
    }
}
