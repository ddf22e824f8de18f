//! A loopback TCP forwarder that can make its open connections go silent (no data, no FIN, no
//! RST) while new connections still work: what a client sees when Redis moves or the network
//! drops its packets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The forwarder; its task ends with the test runtime.
pub struct StallProxy {
    /// Port clients connect to.
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    stalled_below: Arc<AtomicUsize>,
}

impl StallProxy {
    /// Forwards `127.0.0.1:<port>` to `127.0.0.1:<upstream>`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stalled_below = Arc::new(AtomicUsize::new(0));
        let (a, s) = (accepted.clone(), stalled_below.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = a.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, id, s.clone()));
                tokio::spawn(pump(sr, cw, id, s.clone()));
            }
        });
        StallProxy {
            port,
            accepted,
            stalled_below,
        }
    }

    /// Every connection open now stops forwarding for good, keeping its sockets open.
    pub fn stall_existing(&self) {
        self.stalled_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    id: usize,
    stalled_below: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if id < stalled_below.load(Ordering::SeqCst) {
            // Swallow everything from now on, holding both sockets open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
