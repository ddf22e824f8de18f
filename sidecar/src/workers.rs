//! Serving threads for the public port. One task accepts connections and hands them out in
//! turn to a fixed set of threads, each running a single-threaded runtime with its own upstream
//! connection pool. A connection then lives on one thread for good: the client connection, the
//! authorisation and the upstream connection wake each other without crossing threads, which
//! costs markedly less CPU per request than a work-stealing pool.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::app::{self, AppState};

/// Connections waiting for a busy thread before the acceptor waits too.
const BACKLOG: usize = 256;

/// A serving thread's share of the public port, as an `axum` listener.
pub struct Handed {
    incoming: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Handed {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.incoming.recv().await else {
                // The acceptor stopped (shutdown): nothing more will arrive.
                return std::future::pending().await;
            };
            // Registers the socket with this thread's reactor.
            match TcpStream::from_std(stream) {
                Ok(stream) => return (stream, peer),
                Err(e) => tracing::warn!(error = %e, "cannot adopt an accepted connection"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The client's address, for handlers (`ConnectInfo<Peer>`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Handed>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Handed>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The running serving threads.
pub struct Workers {
    finished: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one thread per entry of `states` (each with its own upstream pool), serving until
    /// `stop` resolves, and an acceptor task on the calling runtime.
    pub fn start<F>(
        listener: TcpListener,
        states: Vec<Arc<AppState>>,
        stop: impl Fn() -> F,
    ) -> std::io::Result<Workers>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let local = listener.local_addr()?;
        let mut senders = Vec::with_capacity(states.len());
        let mut finished = Vec::with_capacity(states.len());
        for (index, state) in states.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(BACKLOG);
            let (done_tx, done_rx) = oneshot::channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handed = Handed {
                incoming: rx,
                local,
            };
            let stopped = stop();
            std::thread::Builder::new()
                .name(format!("serve-{index}"))
                .spawn(move || {
                    let service = app::router(state).into_make_service_with_connect_info::<Peer>();
                    let server = axum::serve(handed, service).with_graceful_shutdown(stopped);
                    if let Err(e) = runtime.block_on(server.into_future()) {
                        tracing::error!(error = %e, "serving thread failed");
                    }
                    let _ = done_tx.send(());
                })?;
            senders.push(tx);
            finished.push(done_rx);
        }
        tokio::spawn(accept_loop(listener, senders, stop()));
        Ok(Workers { finished })
    }

    /// Resolves when every thread has finished its connections.
    pub async fn finished(self) {
        for done in self.finished {
            let _ = done.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    threads: Vec<mpsc::Sender<(std::net::TcpStream, SocketAddr)>>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut next = 0;
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
        // Small MCP messages and SSE events go out as soon as they are written.
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let thread = &threads[next];
        next = (next + 1) % threads.len();
        if thread.send((stream, peer)).await.is_err() {
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
