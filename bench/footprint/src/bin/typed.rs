//! The typed worker: its end of the channel is stdin, a `Responder`
//! serves `Register` until the pipeline hangs up. Measured against
//! `channel`, which does the same by hand.

use std::os::fd::AsFd;
use std::process::ExitCode;

use ipc_unixsocket::calls::Responder;
use ipc_unixsocket::{Channel, Error, rustix};
use ipc_unixsocket_footprint::{MAX_FDS, Register, Request};

fn main() -> ExitCode {
    // No `{}` or `{:?}` of an error: formatting would cost more than
    // what is measured. The exit code says where it failed.
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn serve() -> Result<(), Error> {
    let stdin = rustix::io::dup(std::io::stdin().as_fd())?;
    let channel = Channel::<MAX_FDS>::adopt(stdin)?;
    let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    let mut responder = Responder::<Register, MAX_FDS>::new(channel, &mut out, &mut inbox)?;
    let mut value = 0;
    loop {
        let served = responder.serve(|call| {
            if let Request::Set(new) = call.request {
                value = new;
            }
            Ok(value)
        });
        match served {
            Ok(_) => {}
            Err(Error::Disconnected) => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}
