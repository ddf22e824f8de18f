//! mcp-warden sidecar: makes an MCP server safe to put on a URL.
//!
//! In `jwt` mode it is an OAuth 2.1 resource server: it verifies bearer JWTs against the
//! issuer's keys, answers unauthenticated clients with the RFC 9728 challenge MCP clients use to
//! find the authorization server, and stream-proxies authorised requests to the app. The
//! policy comes from an `McpAuthPolicy` document on disk and is hot-reloaded.

pub mod admin;
pub mod allocator;
pub mod app;
pub mod audit;
pub mod challenge;
pub mod chunked;
pub mod cli;
pub mod connection;
pub mod forward;
pub mod head_fields;
pub mod header_maps;
pub mod http1;
pub mod in_place;
pub mod introspect;
pub mod jwks;
pub mod keys;
pub mod metadata;
pub mod metrics;
pub mod oauth;
pub mod origin;
pub mod peer;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod request_body;
pub mod request_span;
pub mod rpc;
pub mod rules;
pub mod runtime;
pub mod scopes;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod tap;
pub mod telemetry;
pub mod verify;
pub mod workers;
