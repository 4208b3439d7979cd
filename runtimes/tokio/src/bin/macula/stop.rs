//! Waiting for the user or the system to ask the process to stop: Ctrl-C
//! (SIGINT) everywhere, and SIGTERM on Unix (what `kill`, systemd and
//! container runtimes send).

/// Resolves when the process is asked to stop; if the signals cannot be
/// watched, says so and resolves at once (stopping cleanly beats running
/// unstoppable).
pub async fn requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    interrupted = tokio::signal::ctrl_c() => report(interrupted),
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => report(Err(e)),
        }
    }
    #[cfg(not(unix))]
    report(tokio::signal::ctrl_c().await);
}

/// Says why waiting for a signal failed, if it did.
fn report(waited: std::io::Result<()>) {
    if let Err(e) = waited {
        eprintln!("cannot wait for Ctrl-C ({e}); stopping");
    }
}
