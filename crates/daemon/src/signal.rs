//! Process signals shared by the Tether binaries: SIGINT/SIGTERM stop,
//! SIGHUP reloads.

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// SIGHUP, as a stream of "reload now". Signals that arrive while a reload
/// runs collapse into one more reload.
#[derive(Debug)]
pub struct Reloads {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Reloads {
    /// Listens for SIGHUP from now on. Must be called inside the runtime.
    pub fn listen() -> Reloads {
        #[cfg(unix)]
        {
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            Reloads { hup }
        }
        #[cfg(not(unix))]
        Reloads {}
    }

    /// Completes at the next SIGHUP; never, where there is none.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(hup) = &mut self.hup
            && hup.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// What a daemon needs to reload itself: where its config came from, the
/// logger to reconfigure, and SIGHUP.
#[derive(Debug)]
pub struct Reload {
    path: Option<std::path::PathBuf>,
    logging: crate::logging::Logging,
    signals: Reloads,
    count: u64,
    /// Outcomes for `/metrics`; the daemon's admin endpoint shares it.
    state: std::sync::Arc<crate::config_state::ConfigState>,
}

impl Reload {
    /// Listens for SIGHUP from now on. Must be called inside the runtime.
    pub fn new(path: Option<std::path::PathBuf>, logging: crate::logging::Logging) -> Reload {
        Reload {
            path,
            logging,
            signals: Reloads::listen(),
            count: 0,
            state: std::sync::Arc::default(),
        }
    }

    /// Waits for the next SIGHUP and reads the config again (file and
    /// environment, exactly as at start). Returns the reload's number too,
    /// for log lines that tests and operators can match.
    pub async fn next(
        &mut self,
    ) -> (
        u64,
        Result<crate::config::RawFile, crate::config::ConfigError>,
    ) {
        self.signals.next().await;
        self.count += 1;
        let env = crate::config::Env::process();
        (self.count, crate::config::load(self.path.as_deref(), &env))
    }

    pub fn logging(&self) -> &crate::logging::Logging {
        &self.logging
    }

    /// Where the reload task records each outcome (and certificates it
    /// loads), for the admin endpoint.
    pub fn state(&self) -> std::sync::Arc<crate::config_state::ConfigState> {
        self.state.clone()
    }
}
