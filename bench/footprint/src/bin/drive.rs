//! Runs both workers through the same exchange with a `Caller` and checks
//! that they answer alike: `drive target/release/typed target/release/channel`.
//! Not measured; it shows the two binaries do the same work.

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use ipc_unixsocket::Channel;
use ipc_unixsocket::calls::{Caller, Hello};
use ipc_unixsocket_footprint::{HELLO, MAX_FDS, Register, Request};

fn main() -> ExitCode {
    let mut hello = [0u8; 64];
    let hello = postcard::to_slice(&Hello::of::<Register>(), &mut hello).expect("the hello fits");
    if hello != HELLO {
        eprintln!("HELLO in src/lib.rs is stale; the hello is {hello:?}");
        return ExitCode::FAILURE;
    }
    let mut failed = false;
    for worker in std::env::args().skip(1) {
        match drive(&worker) {
            Ok(replies) => println!("{worker}: {replies:?}"),
            Err(error) => {
                eprintln!("{worker}: {error}");
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Starts `worker` with its end of a channel as stdin, makes the calls,
/// hangs up and checks that it exits with 0.
fn drive(worker: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (pipeline, remote) = Channel::<MAX_FDS>::create()?;
    let mut child = Command::new(worker).stdin(Stdio::from(remote)).spawn()?;
    let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    let mut caller = Caller::<Register, MAX_FDS, 1>::new(pipeline, &mut out, &mut inbox)?;
    let mut replies = Vec::new();
    for request in [Request::Get, Request::Set(7), Request::Get, Request::Set(200), Request::Get] {
        let (reply, _fds) = caller
            .call(&request, &[], Duration::from_secs(5), |_, _| {})
            .map_err(|error| format!("{request:?}: {error:?}"))?;
        replies.push(reply);
    }
    drop(caller);
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("exited with {status}").into());
    }
    if replies != [0, 7, 7, 200, 200] {
        return Err(format!("wrong replies {replies:?}").into());
    }
    Ok(replies)
}
