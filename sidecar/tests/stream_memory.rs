//! What an open, idle SSE stream costs the sidecar in heap memory, counted by the allocator.
//!
//! The same number of GET event streams is held open first straight to an app that sends one
//! event and then nothing, then through the sidecar; each stream counts once its first event has
//! arrived. The difference between the two is the sidecar's own share: its client connection,
//! its connection to the app and the stream between them. Memory is counted in bytes handed out
//! by the allocator (not RSS, which depends on the allocator's reuse of pages).

mod support;

use std::alloc::System;
use std::convert::Infallible;
use std::net::SocketAddr;

use axum::response::sse::{Event, Sse};
use futures_util::StreamExt as _;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Streams held open in each phase.
const STREAMS: usize = 200;

/// The most heap one idle stream may cost the sidecar (11.8 KB measured in a debug build): the
/// client's connection holds no read or write buffer while its stream is idle, nor does the
/// exchange with the app. With hyper's server (an 8 KiB read buffer and an 8 KiB header write
/// buffer per client connection) it was 26 KB, and 51 KB with hyper's client too.
const MAX_BYTES_PER_STREAM: i64 = 16 * 1024;

/// An app whose event streams send one event and then stay open without a sound.
async fn start_quiet_app() -> SocketAddr {
    let events = || async {
        let first = futures_util::stream::once(async {
            Ok::<_, Infallible>(Event::default().data("hello"))
        });
        Sse::new(first.chain(futures_util::stream::pending()))
    };
    serve(axum::Router::new().route(RESOURCE_PATH, axum::routing::get(events))).await
}

/// Opens `n` GET event streams to `addr`, each read until its first event.
async fn open_streams(addr: SocketAddr, token: &str, n: usize) -> Vec<TcpStream> {
    let request = format!(
        "GET {RESOURCE_PATH} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         accept: text/event-stream\r\n\r\n"
    );
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(11).any(|w| w == b"data: hello") {
            let read = stream.read(&mut buf).await.unwrap();
            assert!(read > 0, "{}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..read]);
        }
        assert!(seen.starts_with(b"HTTP/1.1 200"));
        streams.push(stream);
    }
    streams
}

/// Heap bytes still allocated of what was allocated since `region` began.
fn held(region: &Region<'_, System>) -> i64 {
    let change = region.change();
    i64::try_from(change.bytes_allocated).unwrap()
        - i64::try_from(change.bytes_deallocated).unwrap()
        + i64::try_from(change.bytes_reallocated).unwrap()
}

#[tokio::test]
async fn an_idle_sse_stream_costs_the_sidecar_little_heap() {
    let key = SigningKey::generate("k1");
    let idp = Idp::start(vec![key.jwk.clone()]).await;
    let app = start_quiet_app().await;
    let issuer = idp.issuer.clone();
    let sidecar = Sidecar::start(
        // The audit trail off: its writer thread would free request records while counting.
        move |resource| policy_yaml(&issuer, resource, "  audit: {enabled: false}"),
        &format!("http://{app}"),
    )
    .await;
    let token = key.sign(&claims(&idp, &sidecar.url(), "mcp:tools"));
    // Once through each path first, so caches and lazily built state are in place (held open:
    // streams closing while counting would free memory in the count).
    let warm = (
        open_streams(app, &token, 4).await,
        open_streams(sidecar.addr, &token, 4).await,
    );

    let region = Region::new(HEAP);
    let direct = open_streams(app, &token, STREAMS).await;
    let app_and_client = held(&region);
    let region = Region::new(HEAP);
    let proxied = open_streams(sidecar.addr, &token, STREAMS).await;
    let everything = held(&region);

    let per_stream = (everything - app_and_client) / i64::try_from(STREAMS).unwrap();
    println!("the sidecar holds {per_stream} heap bytes per idle SSE stream");
    assert!(
        per_stream <= MAX_BYTES_PER_STREAM,
        "{per_stream} bytes per stream"
    );
    drop((warm, direct, proxied));
}
