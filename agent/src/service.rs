//! Living under systemd: readiness and watchdog notifications (`Type=notify`,
//! `WatchdogSec=`), and the signals: SIGTERM/SIGINT cancel the one shutdown token (a second
//! one quits at once), SIGHUP asks for the configuration to be read again.

use std::sync::Arc;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Exit status after a second stop signal: the conventional 128 + SIGTERM.
const EXIT_SECOND_SIGNAL: i32 = 143;

fn notify(states: &[NotifyState<'_>]) {
    // Outside systemd there is no socket and this does nothing.
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "systemd notification not sent");
    }
}

pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn notify_status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub fn notify_watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// Runs `work` while feeding the watchdog every second: a long drain or readiness wait is
/// work in progress, not a hang.
pub async fn feeding_watchdog<F: std::future::Future>(work: F) -> F::Output {
    let feeder = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            notify_watchdog();
        }
    };
    tokio::select! {
        output = work => output,
        never = feeder => never,
    }
}

pub fn notify_stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Installs the signal handlers; returns the shutdown token and the reload notifier.
pub fn install_signals() -> std::io::Result<(CancellationToken, Arc<Notify>)> {
    let shutdown = CancellationToken::new();
    let reload = Arc::new(Notify::new());
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                };
                if shutdown.is_cancelled() {
                    tracing::warn!(signal = name, "second stop signal: quitting at once");
                    std::process::exit(EXIT_SECOND_SIGNAL);
                }
                tracing::info!(signal = name, "stopping");
                notify_stopping();
                shutdown.cancel();
            }
        });
    }
    {
        let reload = reload.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                reload.notify_one();
            }
        });
    }
    Ok((shutdown, reload))
}
