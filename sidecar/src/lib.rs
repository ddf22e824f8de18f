//! mcp-warden sidecar.
pub mod store;
