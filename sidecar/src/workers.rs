//! Serving threads for the public port. One task accepts connections and hands them out in
//! turn to a fixed set of threads, each running a single-threaded runtime with its own upstream
//! connection pool. A connection then lives on one thread for good: the client connection, the
//! authorisation and the upstream connection wake each other without crossing threads, which
//! costs markedly less CPU per request than a work-stealing pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::app::{self, AppState};
use crate::connection::{self, Limits};
use crate::in_place;
use crate::shutdown::{self, Phase};

/// Connections waiting for a busy thread before the acceptor waits too.
const BACKLOG: usize = 256;
/// How often a serving thread lets go of a policy a reload replaced (see
/// [`app::snapshot::release_replaced`]), should no request have done so.
const RELEASE_REPLACED: Duration = Duration::from_secs(1);

/// An accepted connection on its way to a serving thread, with its place under the cap.
type Accepted = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);

/// The running serving threads.
pub struct Workers {
    finished: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one thread per entry of `states` (each with its own upstream pool), serving under
    /// `limits` until `phase` reaches [`Phase::Stopping`], and an acceptor task on the calling
    /// runtime.
    pub fn start(
        listener: TcpListener,
        states: Vec<Arc<AppState>>,
        limits: Limits,
        phase: watch::Receiver<Phase>,
    ) -> std::io::Result<Workers> {
        let mut senders = Vec::with_capacity(states.len());
        let mut finished = Vec::with_capacity(states.len());
        for (index, state) in states.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(BACKLOG);
            let (done_tx, done_rx) = oneshot::channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let phase = phase.clone();
            std::thread::Builder::new()
                .name(format!("serve-{index}"))
                .spawn(move || {
                    runtime.block_on(serve_thread(rx, state, limits, phase));
                    app::snapshot::release();
                    let _ = done_tx.send(());
                })?;
            senders.push(tx);
            finished.push(done_rx);
        }
        let cap = Arc::new(Semaphore::new(limits.max_connections));
        tokio::spawn(accept_loop(
            listener,
            senders,
            cap,
            shutdown::reached(phase, Phase::Stopping),
        ));
        Ok(Workers { finished })
    }

    /// Resolves when every thread has finished its connections.
    pub async fn finished(self) {
        for done in self.finished {
            let _ = done.await;
        }
    }
}

/// One serving thread: serves the connections handed to it until `phase` reaches
/// [`Phase::Stopping`], then waits for them to finish.
async fn serve_thread(
    mut incoming: mpsc::Receiver<Accepted>,
    state: Arc<AppState>,
    limits: Limits,
    phase: watch::Receiver<Phase>,
) {
    // Each connection holds a sender; the receiver sees the end once all are gone.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let until_stopped = shutdown::reached(phase.clone(), Phase::Stopping);
    tokio::pin!(until_stopped);
    let mut release = tokio::time::interval(RELEASE_REPLACED);
    release.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer, permit) = tokio::select! {
            () = &mut until_stopped => break,
            _ = release.tick() => {
                app::snapshot::release_replaced();
                continue;
            }
            next = incoming.recv() => match next {
                Some(accepted) => accepted,
                None => break,
            },
        };
        // Registers the socket with this thread's reactor.
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot adopt an accepted connection");
                continue;
            }
        };
        let open = open_tx.clone();
        let state = state.clone();
        let handler = move |request, peer| app::handle(state.clone(), request, peer);
        // Boxed: spawning moves the future it is given several times over, and a connection's
        // future is kilobytes large.
        tokio::spawn(in_place::boxed(|| {
            connection::serve(stream, peer, handler, limits, phase.clone(), permit, open)
        }));
    }
    drop(open_tx);
    let _ = open_rx.recv().await;
}

/// How often a refused connection is logged at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

async fn accept_loop(
    listener: TcpListener,
    threads: Vec<mpsc::Sender<Accepted>>,
    cap: Arc<Semaphore>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut next = 0;
    let mut logged: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Over the cap: closed at once, so the kernel's queue does not fill with clients that
        // would only be served after they gave up.
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            if logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                tracing::warn!(%peer, "connection limit reached (--max-connections); closing new connections");
                logged = Some(Instant::now());
            }
            continue;
        };
        // Small MCP messages and SSE events go out as soon as they are written.
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let thread = &threads[next];
        next = (next + 1) % threads.len();
        if thread.send((stream, peer, permit)).await.is_err() {
            return;
        }
    }
}

/// Most serving threads started without `--workers`: a sidecar in front of one MCP server
/// rarely needs more, and a large node should not cost every pod dozens of threads.
const DEFAULT_MAX: usize = 4;

/// How many serving threads to run when `--workers` is not given: one per available CPU
/// (container CPU limits included), at most [`DEFAULT_MAX`].
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(DEFAULT_MAX)
}
