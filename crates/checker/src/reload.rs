//! SIGHUP: read the config again and apply the pool (by identity: members
//! added, removed, re-probed), probe settings and log levels in place. Listen
//! addresses are logged as needing a restart; a config that fails
//! validation is refused with one line naming the key.

use log::{error, info, warn};
use tether_daemon::signal::Reload;

use crate::config::CheckerConfig;
use crate::hub::HubHandle;

/// Applies reloads until the task is dropped.
pub async fn run(mut reload: Reload, mut current: CheckerConfig, hub: HubHandle) {
    loop {
        let (n, loaded) = reload.next().await;
        let new = match loaded.and_then(|file| CheckerConfig::from_file(&file)) {
            Ok(new) => new,
            Err(e) => {
                error!(target: "hc", "reload #{n} refused, keeping the running config: {e}");
                reload.state().reloaded(false);
                continue;
            }
        };
        if new.grpc_listen != current.grpc_listen {
            warn!(target: "hc", "reload #{n}: checker.grpc_listen changed; that takes a restart");
        }
        if new.admin_listen != current.admin_listen {
            warn!(target: "hc", "reload #{n}: admin.listen changed; that takes a restart");
        }
        if new.tls != current.tls {
            warn!(target: "hc", "reload #{n}: checker.tls changed; that takes a restart");
        }
        // Whether every part applied; a part that failed keeps the old one.
        let mut whole = true;
        let mut applied = Vec::new();
        match hub.set_pool(new.targets.clone()).await {
            Ok(change) => applied.extend(change.summary()),
            Err(e) => {
                whole = false;
                error!(target: "hc", "reload #{n}: {e}");
            }
        }
        if new.impaired_threshold != current.impaired_threshold {
            match hub.set_impaired_threshold(new.impaired_threshold).await {
                Ok(()) => applied.push("health.impaired_threshold".to_owned()),
                Err(e) => {
                    whole = false;
                    error!(target: "hc", "reload #{n}: {e}");
                }
            }
        }
        if new.log != current.log {
            match reload.logging().apply(&new.log) {
                Ok(()) => applied.push("log levels".to_owned()),
                Err(e) => {
                    whole = false;
                    error!(target: "hc", "reload #{n}: {e}");
                }
            }
        }
        let what = if applied.is_empty() {
            "nothing changed".to_owned()
        } else {
            applied.join(", ")
        };
        reload.state().reloaded(whole);
        info!(target: "hc", "reload #{n} applied: {what}");
        current = CheckerConfig {
            grpc_listen: current.grpc_listen,
            admin_listen: current.admin_listen,
            tls: current.tls,
            ..new
        };
    }
}
