//! SIGHUP: read the config again and apply what can change in place.
//!
//! Settings (timeouts, limits, retries, sticky, passive) go to connections
//! accepted from now on; the embedded checker's pool changes by identity
//! (members added, removed, re-probed); log levels change at once. What is
//! bound at start (listen addresses, the upgrade socket, the connection cap,
//! the health source) is logged as needing a restart (or an upgrade). A config that fails validation is
//! refused with one line naming the key, and the running config stays.

use std::sync::Arc;

use log::{error, info, warn};
use tether_checker::HubHandle;
use tether_daemon::signal::Reload;

use crate::config::{HealthSource, ProxyConfig};
use crate::forward::Proxy;
use crate::tls::Acceptor;

/// Applies reloads until the task is dropped.
pub async fn run(
    mut reload: Reload,
    mut current: ProxyConfig,
    proxy: Arc<Proxy>,
    hub: Option<HubHandle>,
    tls: Option<Acceptor>,
) {
    loop {
        let (n, loaded) = reload.next().await;
        let new = match loaded.and_then(|file| ProxyConfig::from_file(&file)) {
            Ok(new) => new,
            Err(e) => {
                error!(target: "proxy", "reload #{n} refused, keeping the running config: {e}");
                reload.state().reloaded(false);
                continue;
            }
        };
        // Whether every part applied; a part that failed keeps the old one.
        let mut whole = true;
        for what in needs_restart(&current, &new) {
            warn!(target: "proxy", "reload #{n}: {what} changed; that takes a restart");
        }
        let mut applied = Vec::new();
        // Certificates are read again on every reload: rotation usually
        // rewrites the same paths.
        if let (Some(acceptor), Some(files)) = (&tls, &new.tls) {
            match acceptor.reload(files) {
                Ok(()) => {
                    reload.state().certificate_file("proxy.tls", &files.cert);
                    applied.push("certificate".to_owned());
                }
                Err(e) => {
                    whole = false;
                    error!(target: "proxy", "reload #{n}: keeping the running certificate: {e}")
                }
            }
        }
        let settings = new.settings();
        if settings != current.settings() {
            proxy.set_settings(settings);
            applied.push("settings".to_owned());
        }
        if let (Some(hub), HealthSource::Embedded { targets, .. }) = (&hub, &new.source) {
            match hub.set_pool(targets.clone()).await {
                Ok(change) => applied.extend(change.summary()),
                Err(e) => {
                    whole = false;
                    error!(target: "proxy", "reload #{n}: embedded checker: {e}");
                }
            }
        }
        if new.log != current.log {
            match reload.logging().apply(&new.log) {
                Ok(()) => applied.push("log levels".to_owned()),
                Err(e) => {
                    whole = false;
                    error!(target: "proxy", "reload #{n}: {e}");
                }
            }
            proxy.refresh_access_log();
        }
        let what = if applied.is_empty() {
            "nothing changed".to_owned()
        } else {
            applied.join(", ")
        };
        if let Some(identity) = new
            .health_source_tls
            .as_ref()
            .and_then(|t| t.identity.as_ref())
        {
            // The health channel reads its files at each reconnect.
            reload
                .state()
                .certificate_file("health_source.tls", &identity.cert);
        }
        reload.state().reloaded(whole);
        info!(target: "proxy", "reload #{n} applied: {what}");
        current = keep_bound(current, new);
    }
}

/// What changed that only a restart applies.
fn needs_restart(old: &ProxyConfig, new: &ProxyConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("proxy.listen");
    }
    if old.admin_listen != new.admin_listen {
        out.push("admin.listen");
    }
    if old.max_connections != new.max_connections {
        out.push("proxy.max_connections");
    }
    if old.drain_timeout != new.drain_timeout {
        out.push("proxy.drain_timeout");
    }
    if old.upgrade_socket != new.upgrade_socket {
        out.push("proxy.upgrade_socket");
    }
    if old.tls.is_some() != new.tls.is_some() {
        out.push("proxy.tls (on or off)");
    }
    // The health channel re-reads its files at each reconnect; only a change
    // of the paths themselves needs a restart.
    if old.health_source_tls != new.health_source_tls {
        out.push("health_source.tls");
    }
    if old.embedded_checker_tls != new.embedded_checker_tls {
        out.push("checker.tls");
    }
    let dns = |c: &ProxyConfig| c.checker_dns.as_ref().map(|d| d.refresh);
    if dns(old) != dns(new) {
        out.push("health_source.expand / health_source.dns_refresh");
    }
    match (&old.source, &new.source) {
        (HealthSource::Checkers(a), HealthSource::Checkers(b)) if a != b => {
            out.push("health_source.checkers");
        }
        (
            HealthSource::Embedded { grpc_listen: a, .. },
            HealthSource::Embedded { grpc_listen: b, .. },
        ) if a != b => out.push("checker.grpc_listen"),
        (HealthSource::Checkers(_), HealthSource::Embedded { .. })
        | (HealthSource::Embedded { .. }, HealthSource::Checkers(_)) => {
            out.push("health_source (embedded or checkers)");
        }
        _ => {}
    }
    out
}

/// The config now running: `new`'s reloadable parts on `old`'s bound ones
/// (the health source included: its pool is applied through the hub), so a
/// restart-only change is reported again on each reload until it is
/// restarted or reverted.
fn keep_bound(old: ProxyConfig, new: ProxyConfig) -> ProxyConfig {
    ProxyConfig {
        listen: old.listen,
        admin_listen: old.admin_listen,
        max_connections: old.max_connections,
        drain_timeout: old.drain_timeout,
        upgrade_socket: old.upgrade_socket,
        source: old.source,
        tls: old.tls,
        health_source_tls: old.health_source_tls,
        checker_dns: old.checker_dns,
        embedded_checker_tls: old.embedded_checker_tls,
        ..new
    }
}
