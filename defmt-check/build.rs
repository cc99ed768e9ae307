//! Links this package's binaries the way "Linking a Linux binary" in
//! docs/logging.md tells a downstream user of the `defmt` feature to: with the
//! crate's linker script, which its build script put on the search path,
//! and non-PIE.

fn main() {
    println!("cargo:rustc-link-arg=-Tipc-unixsocket-defmt.x");
    println!("cargo:rustc-link-arg=-no-pie");
}
