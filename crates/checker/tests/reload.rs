//! SIGHUP reloads of a real `tether-checker` process: the pool changes by
//! identity, a bad config is refused naming its key.

use std::time::Duration;

use tether_testkit::{FakeBackend, Proc, TempConfig};

const START: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);

fn toml(members: &[&FakeBackend]) -> String {
    let mut t = String::from(
        "[checker]\ngrpc_listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n\
         [health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\n",
    );
    for m in members {
        t.push_str(&format!(
            "\n[[targets]]\nurl = \"{}\"\nname = \"{}\"\n",
            m.url(),
            m.name()
        ));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_members_and_refuses_a_bad_config() {
    let a = FakeBackend::start("app-a").await;
    let b = FakeBackend::start("app-b").await;
    let config = TempConfig::new(&toml(&[&a]));
    let proc = Proc::spawn("tether-checker", &["--config", config.path_str()], &[]);
    proc.wait_listening("grpc listening", START).await;

    std::fs::write(config.path(), toml(&[&b])).expect("write");
    let mark = proc.line_count();
    proc.reload();
    let line = proc
        .wait_for_line_after(mark, "reload #1 applied", DEADLINE)
        .await;
    assert!(
        line.contains("added [\"app-b\"]") && line.contains("removed [\"app-a\"]"),
        "{line}"
    );
    // The new member is probed: its first verdict is logged on `hc`.
    proc.wait_for_line_after(mark, "app-b unknown -> healthy", DEADLINE)
        .await;

    std::fs::write(config.path(), "[health]\nrise = 0\n").expect("write");
    let mark = proc.line_count();
    proc.reload();
    let line = proc
        .wait_for_line_after(mark, "reload #2 refused", DEADLINE)
        .await;
    assert!(line.contains("health.rise"), "{line}");
    drop(proc);
    a.stop().await;
    b.stop().await;
}
