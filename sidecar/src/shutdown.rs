//! The way out on SIGTERM or SIGINT, in [`Phase`]s: `/readyz` fails at once while the public port
//! keeps serving for `--shutdown-delay` (in Kubernetes, endpoints and load balancers drop the pod
//! only some time after it was told to stop, so new connections still arrive); then the port
//! stops accepting and the connections drain.

use std::pin::Pin;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::sync::watch;

/// Where the process is on its way out; each phase follows the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Ready and serving.
    Serving,
    /// Told to stop: `/readyz` fails, the public port still accepts and serves; HTTP/1.1
    /// responses carry `Connection: close` and HTTP/2 clients are told to go (GOAWAY), so
    /// clients move to other replicas with their next request.
    Leaving,
    /// No new connections: requests in flight finish, idle connections close, SSE streams
    /// opened with GET end (a complete response, so clients reconnect elsewhere).
    Stopping,
}

/// The phase's sender and a receiver to clone for everyone who follows it.
pub fn channel() -> (watch::Sender<Phase>, watch::Receiver<Phase>) {
    watch::channel(Phase::Serving)
}

/// Resolves once `phase` has reached `at` (at once if it already has, or if the sender is gone).
pub async fn reached(mut phase: watch::Receiver<Phase>, at: Phase) {
    let _ = phase.wait_for(|now| *now >= at).await;
}

/// Like [`reached`], but cheap to poll on every wake-up of a connection's task: once polled (and
/// so registered for the phase's next move), it only looks at the channel's version (an atomic)
/// until the phase moves or the task's waker changes. Once resolved, it stays resolved.
pub fn reached_cheaply(phase: &watch::Receiver<Phase>, at: Phase) -> impl Future<Output = ()> {
    let moved = phase.clone();
    let mut reached: Option<Pin<Box<dyn Future<Output = ()> + Send>>> =
        Some(Box::pin(reached(phase.clone(), at)));
    let mut registered: Option<Waker> = None;
    std::future::poll_fn(move |cx| {
        let Some(waiting) = reached.as_mut() else {
            return Poll::Ready(());
        };
        if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            && matches!(moved.has_changed(), Ok(false))
        {
            return Poll::Pending;
        }
        registered = Some(cx.waker().clone());
        if waiting.as_mut().poll(cx).is_ready() {
            reached = None;
            return Poll::Ready(());
        }
        Poll::Pending
    })
}

/// Waits for SIGTERM or SIGINT, then moves `phase` to [`Phase::Leaving`], and after `delay` (or
/// a second signal) to [`Phase::Stopping`].
pub async fn on_signal(phase: watch::Sender<Phase>, delay: Duration) {
    signal().await;
    phase.send_replace(Phase::Leaving);
    if !delay.is_zero() {
        tracing::info!(
            delay_seconds = delay.as_secs(),
            "shutting down: /readyz fails; still serving until the delay is over (--shutdown-delay)"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = signal() => tracing::info!("second signal: the shutdown delay is cut short"),
        }
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    phase.send_replace(Phase::Stopping);
}

async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reached_resolves_for_the_phase_and_every_later_one() {
        let (tx, rx) = channel();
        let leaving = tokio::spawn(reached(rx.clone(), Phase::Leaving));
        tx.send_replace(Phase::Stopping);
        leaving.await.unwrap();
        reached(rx, Phase::Stopping).await;
    }
}
