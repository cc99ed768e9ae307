//! Start-up time of a worker under each confinement step and profile:
//! from `WorkerCommand::spawn` to the first reply of a typed call (the
//! worker has exec'd, taken its channel, installed its filter if asked,
//! and answered). Writes a markdown table to stdout.
//!
//! ```sh
//! cargo run --release --manifest-path bench/Cargo.toml --bin worker_startup [-- REPS]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipc_unixsocket::Error;
use ipc_unixsocket::calls::{Caller, NoError, Protocol, Responder};
use ipc_unixsocket::worker::{self, Confinement, ExitReason, Namespaces, WorkerCommand};

const WORKER_ARG: &str = "--worker";
const TIMEOUT: Duration = Duration::from_secs(5);

struct Ping;

impl Protocol for Ping {
    const NAME: &'static str = "bench.worker-startup";
    const VERSION: u32 = 1;
    type Request<'a> = u32;
    type Reply<'a> = u32;
    type Event<'a> = ();
    type Error<'a> = NoError;
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(WORKER_ARG) {
        return serve();
    }
    let reps: usize = args.first().and_then(|r| r.parse().ok()).unwrap_or(100);
    let root = rustix::process::geteuid().is_root();
    let mut profiles: Vec<(&str, Confinement)> = vec![
        ("none", Confinement::none()),
        ("no_new_privs", Confinement::none().no_new_privs(true)),
        (
            "pid namespace",
            Confinement::none().namespaces(Namespaces::PID),
        ),
        (
            "net namespace",
            Confinement::none().namespaces(Namespaces::NET),
        ),
        (
            "ipc namespace",
            Confinement::none().namespaces(Namespaces::IPC),
        ),
        (
            "uts namespace",
            Confinement::none().namespaces(Namespaces::UTS),
        ),
        (
            "mount namespace",
            Confinement::none().namespaces(Namespaces::MOUNT),
        ),
        (
            "user namespace",
            Confinement::none().namespaces(Namespaces::USER),
        ),
        (
            "rlimits (nofile, as, core)",
            Confinement::none()
                .limit_open_files(64)
                .limit_address_space(4 << 30)
                .limit_core_size(0),
        ),
        ("seccomp filter", Confinement::none().seccomp(true)),
        ("landlock", Confinement::none().landlock(true)),
        ("strict (the default profile)", Confinement::strict()),
    ];
    if root {
        profiles.insert(
            8,
            (
                "uid/gid nobody",
                Confinement::none().user(worker::NOBODY, worker::NOBODY),
            ),
        );
    }
    let commands: Vec<(&str, WorkerCommand)> = profiles
        .into_iter()
        .map(|(name, profile)| {
            let mut command = WorkerCommand::current_exe().expect("current_exe");
            command.arg(WORKER_ARG).confine(profile);
            (name, command)
        })
        .collect();
    // Interleaved: one start of each profile per round, so that machine
    // noise spreads over all of them.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(reps); commands.len()];
    for _ in 0..3 {
        for (_, command) in &commands {
            start_once(command);
        }
    }
    for _ in 0..reps {
        for (k, (_, command)) in commands.iter().enumerate() {
            samples[k].push(start_once(command));
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let p90 = |v: &Vec<Duration>| v[v.len() * 9 / 10];
    let base = median(&mut samples[0].clone());
    println!("| profile | median spawn to first reply | p90 | ratio to none (medians) |");
    println!("|---|---:|---:|---:|");
    for ((name, _), v) in commands.iter().zip(&mut samples) {
        let m = median(v);
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} |",
            m.as_secs_f64() * 1e3,
            p90(v).as_secs_f64() * 1e3,
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!("\n{reps} starts per profile, interleaved, after 3 warm-up rounds.");
    ExitCode::SUCCESS
}

/// One start: spawn, hello, one call, its reply; then the worker is told
/// to go (the channel closes) and reaped, outside the measurement.
fn start_once(command: &WorkerCommand) -> Duration {
    let started = Instant::now();
    let (mut worker, channel) = command.spawn::<0>().expect("spawn");
    let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    let mut caller = Caller::<Ping, 0, 1>::new(channel, &mut out, &mut inbox).expect("caller");
    let (reply, _) = caller
        .call(&7, &[], TIMEOUT, |_, _| {})
        .expect("first call");
    let elapsed = started.elapsed();
    assert_eq!(reply, 8);
    drop(caller);
    assert_eq!(
        worker.wait_timeout(TIMEOUT).expect("wait"),
        Some(ExitReason::Exited(0))
    );
    elapsed
}

fn serve() -> ExitCode {
    let Ok(channel) = worker::take_channel::<0>() else {
        return ExitCode::from(2);
    };
    let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    let Ok(mut responder) = Responder::<Ping, 0>::new(channel, &mut out, &mut inbox) else {
        return ExitCode::from(2);
    };
    loop {
        match responder.serve(|call| Ok(call.request + 1)) {
            Ok(_) => {}
            Err(Error::Disconnected) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::from(3),
        }
    }
}
