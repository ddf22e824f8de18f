//! Build script: release builds for Linux with glibc pack the binary's relative relocations
//! (`-z pack-relative-relocs`, DT_RELR) when the toolchain and the C library here support it.
//!
//! A position-independent binary lists every pointer the loader must adjust at start-up; the
//! sidecar has ~15,000 of them, 360 KB read once at start and kept mapped (resident) for good.
//! Packed, the list takes 7 KB. It needs binutils >= 2.38 (or lld) to link and glibc >= 2.36 to
//! run, so a small program is linked and run first; where that fails (an older system, a cross
//! build) the binary is linked as before.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let target = env::var("TARGET").unwrap_or_default();
    let native = env::var("HOST").is_ok_and(|host| host == target);
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    if release && native && target.ends_with("-linux-gnu") && packed_relocations_run() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether a program linked with packed relocations links and runs on this system.
fn packed_relocations_run() -> bool {
    let Some(dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let source = dir.join("relr_probe.c");
    let program = dir.join("relr_probe");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let linked = Command::new(cc)
        .args(["-fPIE", "-pie", "-Wl,-z,pack-relative-relocs", "-o"])
        .arg(&program)
        .arg(&source)
        .output()
        .is_ok_and(|out| out.status.success());
    linked && Command::new(&program).status().is_ok_and(|s| s.success())
}
