//! mcp-warden sidecar.
