//! The webhook serves real TLS with the certificate the operator makes: a client that trusts
//! only the generated CA completes the handshake for the service name and posts a review.

use axum_server::tls_rustls::RustlsConfig;
use mcp_warden_operator::certs;

#[tokio::test]
async fn generated_ca_and_serving_certificate_work_end_to_end() {
    mcp_warden_operator::install_crypto_provider();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let (bundle, _) = certs::ensure(
        None,
        &names,
        k8s_openapi::jiff::Timestamp::now().as_second(),
    )
    .unwrap();
    let tls = RustlsConfig::from_pem(
        bundle.cert_pem.clone().into(),
        bundle.key_pem.clone().into(),
    )
    .await
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/mutate-pods", axum::routing::post(|| async { "ok" }));
    let server = tokio::spawn(
        axum_server::from_tcp_rustls(listener, tls.clone())
            .unwrap()
            .serve(app.into_make_service()),
    );
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(bundle.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/mutate-pods", addr.port());
    let res = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "ok");

    // A client trusting some other CA is refused: the chain really is checked.
    let (other, _) = certs::ensure(
        None,
        &names,
        k8s_openapi::jiff::Timestamp::now().as_second(),
    )
    .unwrap();
    let stranger = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert!(stranger.post(&url).body("{}").send().await.is_err());

    // Rotation: reload a reissued serving certificate in place; clients of the same CA keep
    // working.
    let mut more = names.clone();
    more.push("mcp-warden-webhook.mcp-warden.svc".into());
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let (renewed, changed) = certs::ensure(Some(bundle.clone()), &more, now).unwrap();
    assert!(changed && renewed.ca_pem == bundle.ca_pem);
    tls.reload_from_pem(renewed.cert_pem.into(), renewed.key_pem.into())
        .await
        .unwrap();
    let fresh = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(bundle.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert_eq!(fresh.post(&url).send().await.unwrap().status(), 200);
    server.abort();
}
