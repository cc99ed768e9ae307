//! With the `defmt` feature on Linux: writes `ipc-unixsocket-defmt.x` to
//! `OUT_DIR` and links this package's own binaries (tests, examples,
//! doctests) with it, non-PIE. Otherwise does nothing.
//!
//! defmt's own `defmt.x` is meant to be the whole linker script of a
//! microcontroller image; passed with `-T` on Linux it replaces the default
//! script and the dynamic loader cannot run the result. This script holds the
//! same rules (copied from defmt 1.2's `defmt.x.in`) followed by
//! `INSERT AFTER .comment;`, which makes it augment the default script
//! instead. rust-lld, the default linker on x86_64 Linux, accepts `INSERT`
//! only right after the `SECTIONS` block, so that is where it goes.
//!
//! defmt identifies each log message by the address of a symbol in the
//! `.defmt` section; in a position-independent executable that address is
//! relocated at run time and the frames name the wrong messages, hence
//! `-no-pie`.
//!
//! The `PROVIDE` lines make `ipc_unixsocket::logger` the global logger of
//! every binary that does not define one itself, which is also what lets
//! `cargo test --features defmt` link (defmt issue #1037). The logger needs
//! the `std` feature; without it the script has no such lines and a binary
//! brings its own `#[defmt::global_logger]`.
//!
//! Link arguments from a build script reach only this package's targets, so
//! a downstream binary passes them itself; the script's directory is added to
//! the library search path for that (see "Linking a Linux binary" in
//! docs/logging.md).

use std::env;
use std::fs;
use std::path::PathBuf;

/// The file name downstream binaries pass as `-T<name>`.
const SCRIPT_NAME: &str = "ipc-unixsocket-defmt.x";

/// Replaces `@LOGGER@` in [`SCRIPT`] when the crate has its logger (features
/// `defmt` and `std`); without `std` it has none and the line is removed.
const LOGGER: &str = "/* ipc_unixsocket::logger, for a binary without #[defmt::global_logger] */
EXTERN(__ipc_unixsocket_defmt_acquire);
EXTERN(__ipc_unixsocket_defmt_flush);
EXTERN(__ipc_unixsocket_defmt_release);
EXTERN(__ipc_unixsocket_defmt_write);
PROVIDE(_defmt_acquire = __ipc_unixsocket_defmt_acquire);
PROVIDE(_defmt_flush = __ipc_unixsocket_defmt_flush);
PROVIDE(_defmt_release = __ipc_unixsocket_defmt_release);
PROVIDE(_defmt_write = __ipc_unixsocket_defmt_write);
";

const SCRIPT: &str = r#"/* ipc-unixsocket: defmt 1.2's defmt.x.in, made to augment the default
   linker script of a Linux executable (INSERT AFTER .comment), with
   ipc_unixsocket::logger as the global logger unless the binary has one. */

/* exhaustively search for these symbols */
EXTERN(_defmt_acquire);
EXTERN(_defmt_release);
EXTERN(__defmt_default_timestamp);
EXTERN(__DEFMT_MARKER_TIMESTAMP_WAS_DEFINED);
PROVIDE(_defmt_timestamp = __defmt_default_timestamp);
PROVIDE(_defmt_panic = __defmt_default_panic);

@LOGGER@
SECTIONS
{
  /* `1` specifies the start address of this virtual (`(INFO)`) section */
  /* Tag number 0 is reserved for special uses, like as a format sequence terminator. */
  .defmt 1 (INFO) :
  {
    /* For some reason the `1` above has no effect, but this does */
    . = 1;

    /* Format implementations for primitives like u8 */
    *(.defmt.prim.*);

    /* We order the ids of the log messages by severity and put markers in between, so that we can filter logs at runtime by severity */
    __DEFMT_MARKER_TRACE_START = .;
    *(.defmt.trace.*);
    __DEFMT_MARKER_TRACE_END = .;
    __DEFMT_MARKER_DEBUG_START = .;
    *(.defmt.debug.*);
    __DEFMT_MARKER_DEBUG_END = .;
    __DEFMT_MARKER_INFO_START = .;
    *(.defmt.info.*);
    __DEFMT_MARKER_INFO_END = .;
    __DEFMT_MARKER_WARN_START = .;
    *(.defmt.warn.*);
    __DEFMT_MARKER_WARN_END = .;
    __DEFMT_MARKER_ERROR_START = .;
    *(.defmt.error.*);
    __DEFMT_MARKER_ERROR_END = .;

    /* Everything user-defined */
    *(.defmt.*);

    __DEFMT_MARKER_END = .;

    /* Symbols that aren't referenced by the program and */
    /* should be placed at the end of the section */
    KEEP(*(.defmt.end .defmt.end.*));
  }
}
INSERT AFTER .comment;

ASSERT(__DEFMT_MARKER_END < 65534, ".defmt section cannot contain more than 65534 interned strings");
"#;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let defmt = env::var_os("CARGO_FEATURE_DEFMT").is_some();
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !(defmt && linux) {
        return;
    }
    // defmt filters log levels when the crate compiles; rebuild on a change.
    println!("cargo:rerun-if-env-changed=DEFMT_LOG");

    // `ipc_unixsocket::logger` exists only with `std` (it keeps its frames in
    // a `thread_local!`); without it the script must not name its symbols.
    let logger = if env::var_os("CARGO_FEATURE_STD").is_some() {
        LOGGER
    } else {
        ""
    };

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out.join(SCRIPT_NAME);
    fs::write(&script, SCRIPT.replace("@LOGGER@", logger))
        .expect("write the defmt linker script to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-T{}", script.display());
    println!("cargo:rustc-link-arg=-no-pie");
}
