//! The runner of the `harness = false` test binaries (`cross_process`,
//! `zero_alloc`, `fault_process`, `soak`): libtest-mimic, which parses and
//! prints like libtest (name filters, `--exact`, `--skip`, `--list`,
//! `--ignored`, `running N tests`, `test result: ...`), plus re-execution of
//! the test binary as a child process.
//!
//! Tests run one at a time on the main thread (`--test-threads` is forced to
//! 1): they count the fds or allocations of the whole process, clear
//! `FD_CLOEXEC` before spawning, or take over signal dispositions, so no
//! other test (nor a runner thread) may run meanwhile.

use std::ffi::OsStr;
use std::process::{Command, ExitCode};
use std::time::Duration;

use libtest_mimic::{Arguments, Trial};

use super::Watchdog;

/// First argument of a test binary re-executed as a child process; the
/// child's own arguments follow it.
pub const CHILD: &str = "--child";

/// `main` of a test binary that re-executes itself: with [`CHILD`] as the
/// first argument, runs `child` with the arguments after it (before any
/// argument parsing, thread or allocation of the runner) and exits with its
/// status; otherwise runs the tests `trials` makes, as [`run`] does.
pub fn main(
    child: impl FnOnce(&[String]) -> ExitCode,
    trials: impl FnOnce() -> Vec<Trial>,
) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD) {
        return child(&args[1..]);
    }
    run(trials())
}

/// Runs `trials` with libtest's command line, one at a time on the main
/// thread; exit status 101 if any failed.
pub fn run(trials: Vec<Trial>) -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    libtest_mimic::run(&args, trials).exit_code()
}

/// A test named `name` that runs `test` under a [`Watchdog`] armed for
/// `bound` (so before anything the test measures), disarmed when it ends.
pub fn test(name: &'static str, bound: Duration, test: impl FnOnce() + Send + 'static) -> Trial {
    Trial::test(name, move || {
        let _watchdog = Watchdog::new(name, bound);
        test();
        Ok(())
    })
}

/// This test binary, re-executed as a child: `current_exe [CHILD] args...`.
pub fn child_command<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command.arg(CHILD).args(args);
    command
}
