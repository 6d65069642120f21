//! Release builds of `respawn` on x86-64 Linux give the linker `function-order.txt`: the
//! functions that run while respawn serves, hottest first (made by `scripts/function-order.sh`).
//! lld, Rust's default linker there, places them next to each other at the start of the code, so
//! a serving process touches a compact block of pages instead of pages spread over the whole
//! binary, each of which the kernel maps with its neighbours: its resident size under load drops
//! by about 2.5 MB (docs/BENCHMARKS.md). Names the list has that the binary lacks are skipped.
//!
//! `RESPAWN_FUNCTION_ORDER=off` builds without it; it is also left out when a linker of one's own
//! is configured (it may not know the option), with compilers before Rust 1.90 (whose default
//! linker there was GNU ld) and for other targets.

use std::{env, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=function-order.txt");
    println!("cargo:rerun-if-env-changed=RESPAWN_FUNCTION_ORDER");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("RESPAWN_FUNCTION_ORDER") == "off"
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
    {
        return;
    }
    // A linker of one's own (a `linker` setting or rustc flags that choose one) may be GNU ld,
    // which has no such option.
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("link-self-contained")
    {
        return;
    }
    // lld became the default linker of this target with Rust 1.90; before it, GNU ld.
    if !rustc_links_with_lld() {
        return;
    }
    let list = PathBuf::from(var("CARGO_MANIFEST_DIR")).join("function-order.txt");
    if !list.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Whether the compiler building this is Rust 1.90 or later.
fn rustc_links_with_lld() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split(['.', '-'])
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
