//! Worker processes (`ipc_unixsocket::worker`): starting a worker with its
//! channel and nothing else, watching it from a poll loop, learning why it
//! died, restarting it, and confining it.
//!
//! The workers are this test binary, re-executed by `WorkerCommand` with
//! `harness::CHILD` and a mode. Runs under `common::harness` (libtest-mimic,
//! one test at a time on the main thread) because the tests count the fds
//! and allocations of the whole process and make it a child subreaper.
//!
//! On every architecture; where seccompiler builds no filter (i686, armv7:
//! `worker::SECCOMP_AVAILABLE` is false) the tests of the seccomp step, or
//! their seccomp part, print why they skip it, and the profile of the
//! others is `Confinement::strict()` without that step.

fn main() -> std::process::ExitCode {
    suite::main()
}

mod common;

mod suite {
    use super::common;

    use std::io::{BufRead, BufReader};
    use std::os::fd::{AsFd, OwnedFd};
    use std::process::{ExitCode, Stdio};
    use std::time::{Duration, Instant};

    use common::{harness, memfd, open_fds};
    use ipc_unixsocket::Error;
    use ipc_unixsocket::calls::{
        Attach, Caller, FdSlot, Incoming, NoError, Protocol, Responder, Schema,
    };
    use ipc_unixsocket::worker::{
        self, Confinement, Decision, ExitReason, Namespaces, Restart, Worker, WorkerCommand,
    };
    use rustix::event::{PollFd, PollFlags, poll};
    use rustix::mm::{MapFlags, ProtFlags, mmap};
    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, timerfd_create,
        timerfd_settime,
    };
    use serde::{Deserialize, Serialize};

    #[global_allocator]
    static GLOBAL: common::counting::Counting = common::counting::Counting;

    /// Every wait on a worker: only a hang reaches it.
    const PEER: Duration = Duration::from_secs(5);
    /// Fds a record carries at most: the pool of buffers.
    const POOL: usize = 4;
    /// Size of each frame buffer.
    const FRAME: usize = 4096;

    // ---- the protocol ------------------------------------------------------------

    #[derive(Debug, Serialize, Deserialize, Schema)]
    enum Request {
        /// Map the pool of buffers (libcamera's `mapBuffers`).
        Configure { buffers: [FdSlot; POOL] },
        /// Sum the bytes of buffer `buffer`.
        Process { seq: u32, buffer: u8 },
        /// Crash with a segmentation fault while handling the call.
        Crash,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq, Schema)]
    enum Reply {
        Configured,
        Done { seq: u32, sum: u32 },
    }

    struct Frames;

    impl Protocol for Frames {
        const NAME: &'static str = "worker-test.frames";
        const VERSION: u32 = 1;
        type Request<'a> = Request;
        type Reply<'a> = Reply;
        type Event<'a> = ();
        type Error<'a> = NoError;
    }

    // ---- the workers -----------------------------------------------------------------

    pub fn main() -> ExitCode {
        harness::main(child, trials)
    }

    /// A worker (or another child) of mode `args[0]`.
    fn child(args: &[String]) -> ExitCode {
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        match arg(0) {
            "serve" => serve(),
            "exit" => {
                let _channel = worker::take_channel::<POOL>().expect("take_channel");
                ExitCode::from(arg(1).parse::<u8>().expect("code"))
            }
            "panic" => {
                let _channel = worker::take_channel::<POOL>().expect("take_channel");
                panic!("a worker panics")
            }
            "abort" => {
                let _channel = worker::take_channel::<POOL>().expect("take_channel");
                std::process::abort()
            }
            "segv" => {
                let _channel = worker::take_channel::<POOL>().expect("take_channel");
                segfault()
            }
            "sleep" => {
                // Takes the channel but never reads it: only a signal ends it.
                let _channel = worker::take_channel::<POOL>().expect("take_channel");
                loop {
                    let _ = poll(&mut [], None);
                }
            }
            "fds" => {
                // Exactly stdio and the channel, a SOCK_SEQPACKET socket at 3.
                let channel = worker::take_channel::<POOL>();
                let fds = fds_above_stdio();
                let ok = channel.is_ok() && fds.len() == 1 && fds[0].0 == 3;
                if !ok {
                    eprintln!("worker fds: {fds:?} ({:?})", channel.err());
                }
                ExitCode::from(if ok { 0 } else { 1 })
            }
            "unrelated" => {
                // A child of std::process::Command: no socket of ours.
                let fds = fds_above_stdio();
                let sockets: Vec<_> = fds
                    .iter()
                    .filter(|(_, t)| t.starts_with("socket:"))
                    .collect();
                if !sockets.is_empty() {
                    eprintln!("unrelated child holds sockets: {sockets:?}");
                }
                ExitCode::from(if sockets.is_empty() { 0 } else { 1 })
            }
            "take-twice" => {
                let first = worker::take_channel::<POOL>();
                let second = worker::take_channel::<POOL>();
                let ok = first.is_ok() && second.err() == Some(Error::ChannelTaken);
                ExitCode::from(if ok { 0 } else { 1 })
            }
            "not-spawned" => {
                let got = worker::take_channel::<POOL>();
                ExitCode::from(if got.err() == Some(Error::NoInheritedChannel) {
                    0
                } else {
                    1
                })
            }
            "seccomp-unavailable" => {
                // Asked for a filter this build cannot make: refused, typed.
                let got = worker::take_channel::<POOL>();
                let ok = got.as_ref().err() == Some(&Error::SeccompUnavailable);
                if !ok {
                    eprintln!("take_channel: {:?}", got.err());
                }
                ExitCode::from(if ok { 0 } else { 1 })
            }
            "userns-probe" => {
                // SAFETY: unshare takes an integer; this child has one thread
                // (the runner has not started), as CLONE_NEWUSER requires.
                if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                    ExitCode::SUCCESS
                } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                    ExitCode::from(77)
                } else {
                    eprintln!("unshare: {}", std::io::Error::last_os_error());
                    ExitCode::from(1)
                }
            }
            "inspect" => inspect(),
            "environment" => {
                // Reports its arguments, working directory and environment.
                let channel = worker::take_channel::<POOL>().expect("take_channel");
                let mut report = format!(
                    "args:{}\ncwd:{}\n",
                    args[1..].join(" "),
                    std::env::current_dir().unwrap().display()
                );
                let mut vars: Vec<_> = std::env::vars().map(|(k, _)| k).collect();
                vars.sort();
                report.push_str(&format!("vars:{}\n", vars.join(" ")));
                report.push_str(&format!(
                    "TEST_VAR:{}\n",
                    std::env::var("TEST_VAR").unwrap_or_default()
                ));
                channel.send(report.as_bytes(), &[]).unwrap();
                ExitCode::SUCCESS
            }
            "nonroot-pipeline" => nonroot_pipeline(),
            "hostile" => hostile(arg(1), arg(2).parse().expect("parent pid")),
            "middle" => {
                // Starts a worker (in a pid namespace with "pidns"), says the
                // pids of every process it made, and dies.
                let mut command = WorkerCommand::current_exe().expect("current_exe");
                command.args([harness::CHILD, "sleep"]);
                if arg(1) == "pidns" {
                    command.confine(Confinement::none().namespaces(Namespaces::PID));
                }
                let (worker, _channel) = command.spawn::<POOL>().expect("spawn");
                let pid = worker.pid();
                let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .expect("children");
                println!("{pid} {children}");
                let _pidfd = worker.detach();
                ExitCode::SUCCESS
            }
            other => {
                eprintln!("unknown child mode {other:?}");
                ExitCode::from(2)
            }
        }
    }

    /// A real segmentation fault: a write to address 0.
    fn segfault() -> ! {
        // SAFETY: deliberately not safe: the write faults, and the default
        // action of SIGSEGV ends the process (std's handler, for stack
        // overflows, restores it and returns, and the write faults again).
        unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
        unreachable!("a write to address 0 returned")
    }

    /// `(fd, link target)` of every open fd above 2, but the directory read.
    fn fds_above_stdio() -> Vec<(i32, String)> {
        let mut fds = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
            let entry = entry.expect("entry");
            let fd: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue; // the directory's own fd, closed by now
            };
            let target = target.to_string_lossy().into_owned();
            if fd > 2 && !target.starts_with("/proc/") {
                fds.push((fd, target));
            }
        }
        fds
    }

    /// The `serve` worker: answers `Frames` calls until the pipeline hangs up.
    fn serve() -> ExitCode {
        let channel = match worker::take_channel::<POOL>() {
            Ok(channel) => channel,
            Err(error) => {
                eprintln!("serve: {error}");
                return ExitCode::from(2);
            }
        };
        let (mut out, mut inbox) = ([0u8; 256], [0u8; 256]);
        let mut responder = Responder::<Frames, POOL>::new(channel, &mut out, &mut inbox).unwrap();
        let mut mapped: [Option<&[u8]>; POOL] = [None; POOL];
        loop {
            let served = responder.serve(|call| match call.request {
                Request::Configure { buffers } => {
                    for (slot, map) in buffers.into_iter().zip(&mut mapped) {
                        let fd = call.fds.claim(slot)?;
                        // SAFETY: a fresh read-only shared mapping of a memfd
                        // of FRAME bytes, never unmapped while in use: a new
                        // Configure leaks the old one (this is a test worker).
                        let ptr = unsafe {
                            mmap(
                                std::ptr::null_mut(),
                                FRAME,
                                ProtFlags::READ,
                                MapFlags::SHARED,
                                &fd,
                                0,
                            )
                        }
                        .map_err(Error::from)?;
                        // SAFETY: the mapping is FRAME bytes, readable, and lives
                        // for the rest of the process.
                        *map = Some(unsafe { std::slice::from_raw_parts(ptr.cast(), FRAME) });
                    }
                    Ok(Reply::Configured)
                }
                Request::Process { seq, buffer } => {
                    let frame = mapped[usize::from(buffer) % POOL].unwrap_or(&[]);
                    let sum = frame.iter().map(|&b| u32::from(b)).sum();
                    Ok(Reply::Done { seq, sum })
                }
                Request::Crash => segfault(),
            });
            match served {
                Ok(_) => {}
                Err(Error::Disconnected) => return ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("serve: {error}");
                    return ExitCode::from(3);
                }
            }
        }
    }

    /// The `inspect` worker: reports what it can see of its confinement over
    /// the channel, one `key=value` per line.
    fn inspect() -> ExitCode {
        let channel = worker::take_channel::<POOL>().expect("take_channel");
        let mut report = String::new();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        for line in status.lines() {
            for key in ["NoNewPrivs:", "Uid:", "Gid:", "Groups:", "Seccomp:"] {
                if let Some(value) = line.strip_prefix(key) {
                    let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                    report.push_str(&format!("{key}{value}\n"));
                }
            }
        }
        report.push_str(&format!("pid:{}\n", std::process::id()));
        for fd in 0..3 {
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            report.push_str(&format!("fd{fd}:{}\n", link.display()));
        }
        for ns in ["net", "ipc", "uts", "mnt", "user", "pid"] {
            let link = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            report.push_str(&format!("ns.{ns}:{}\n", link.display()));
        }
        for (name, resource) in [
            ("nofile", rustix::process::Resource::Nofile),
            ("as", rustix::process::Resource::As),
            ("core", rustix::process::Resource::Core),
        ] {
            let limit = rustix::process::getrlimit(resource);
            report.push_str(&format!("rlimit.{name}:{:?}\n", limit.current));
        }
        channel.send(report.as_bytes(), &[]).unwrap();
        ExitCode::SUCCESS
    }

    /// A pipeline that is not root: starts an `inspect` worker under the
    /// strict profile without seccomp (which then includes a user namespace)
    /// and relays its report, then a strict worker with seccomp (where there
    /// is a filter) that exits 0.
    fn nonroot_pipeline() -> ExitCode {
        let channel = worker::take_channel::<POOL>().expect("take_channel");
        let profile = Confinement::strict().seccomp(false);
        let report = inspect_under(profile);
        let strict = run_to_end(&["exit", "0"], strict());
        let report = format!("{report}strict:{strict}\n");
        channel.send(report.as_bytes(), &[]).unwrap();
        ExitCode::SUCCESS
    }

    /// Exit code of a hostile worker whose attempt was refused with an error.
    const REFUSED: u8 = 3;
    /// Exit code of a hostile worker whose attempt succeeded.
    const ESCAPED: u8 = 4;

    /// The `hostile` worker: takes its channel (and so its seccomp filter),
    /// then tries `what` against the pipeline `parent`.
    fn hostile(what: &str, parent: i32) -> ExitCode {
        let _channel = worker::take_channel::<POOL>().expect("take_channel");
        let escaped = match what {
            "open-passwd" => std::fs::File::open("/etc/passwd").is_ok(),
            "inet-socket" => rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::STREAM,
                None,
            )
            .is_ok(),
            "execve" => {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                // SAFETY: NUL-terminated path and NULL-terminated arrays that
                // outlive the call; on success it does not return.
                unsafe { libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
                false
            }
            "ptrace-parent" => {
                // SAFETY: PTRACE_ATTACH takes integers only.
                let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, parent, 0, 0) };
                rc == 0
            }
            "read-parent-memory" => {
                // The first mapped bytes of the pipeline, found in its maps.
                use std::io::{Read, Seek, SeekFrom};
                let mut buf = [0u8; 16];
                std::fs::File::open(format!("/proc/{parent}/mem"))
                    .and_then(|mut mem| {
                        let maps = std::fs::read_to_string(format!("/proc/{parent}/maps"))?;
                        let start = maps.split('-').next().unwrap_or("0");
                        let start = u64::from_str_radix(start, 16).unwrap_or(0);
                        mem.seek(SeekFrom::Start(start))?;
                        mem.read(&mut buf)
                    })
                    .is_ok_and(|read| read > 0)
            }
            "signal-parent" => {
                // Signal 0: the permission check of kill, without a signal.
                // SAFETY: kill takes integers only.
                unsafe { libc::kill(parent, 0) == 0 }
            }
            "fork-bomb" => {
                // Bounded, and every child exits at once, should it work.
                let mut forked = 0;
                for _ in 0..64 {
                    // SAFETY: the child only calls _exit.
                    match unsafe { libc::fork() } {
                        0 => unsafe { libc::_exit(0) },
                        pid if pid > 0 => forked += 1,
                        _ => break,
                    }
                }
                forked > 0
            }
            other => panic!("unknown attempt {other}"),
        };
        ExitCode::from(if escaped { ESCAPED } else { REFUSED })
    }

    // ---- the tests ---------------------------------------------------------------------

    fn trials() -> Vec<libtest_mimic::Trial> {
        let bound = common::TEST_BOUND;
        let mut trials = vec![
            harness::test(
                "worker_gets_its_channel_and_stdio_only",
                bound,
                gets_channel_only,
            ),
            harness::test("take_channel_works_once", bound, take_channel_once),
            harness::test(
                "arguments_environment_and_working_directory_as_command_has_them",
                bound,
                arguments_environment_and_working_directory,
            ),
            harness::test(
                "stdio_null_or_a_given_stderr",
                bound,
                stdio_null_or_a_given_stderr,
            ),
            harness::test(
                "take_channel_refuses_a_process_not_started_as_a_worker",
                bound,
                take_channel_not_spawned,
            ),
            harness::test("exit_codes_are_reported_exactly", bound, exit_codes),
            harness::test("signals_are_reported_exactly", bound, signals),
            harness::test("a_seccomp_kill_is_reported_as_sigsys", bound, seccomp_kill),
            harness::test("the_worker_dies_with_its_pipeline", bound, parent_death),
            harness::test("dropping_the_handle_kills_and_reaps", bound, drop_kills),
            harness::test(
                "poll_loop_sees_death_beside_channel_and_timer_allocating_nothing",
                bound,
                poll_loop,
            ),
            harness::test(
                "a_death_during_a_call_is_seen_from_both_in_either_order",
                bound,
                death_during_call_either_order,
            ),
            harness::test(
                "newcomer_flow_200_frames_one_crash_and_a_restart",
                bound,
                newcomer_flow,
            ),
            harness::test(
                "restart_policy_backs_off_and_gives_up",
                bound,
                restart_policy,
            ),
            harness::test(
                "fds_never_leak_into_children_started_concurrently",
                5 * bound,
                fd_inheritance_stress,
            ),
            harness::test("confine_no_new_privs", bound, confine_no_new_privs),
            harness::test("confine_namespaces", bound, confine_namespaces),
            harness::test("confine_user_namespace", bound, confine_user_namespace),
            harness::test("confine_pid_namespace", bound, confine_pid_namespace),
            harness::test(
                "exit_reasons_through_the_pid_namespace_supervisor",
                bound,
                pid_namespace_exit_reasons,
            ),
            harness::test("confine_uid_gid_and_groups", bound, confine_ids),
            harness::test(
                "strict_profile_from_a_pipeline_that_is_not_root",
                bound,
                strict_profile_from_a_pipeline_that_is_not_root,
            ),
            harness::test("confine_rlimits", bound, confine_rlimits),
            harness::test("confine_landlock", bound, confine_landlock),
            harness::test(
                "the_seccomp_step_is_refused_where_no_filter_is_built",
                bound,
                seccomp_refused_without_a_filter,
            ),
            harness::test(
                "confine_seccomp_filter_is_installed",
                bound,
                confine_seccomp,
            ),
            harness::test(
                "serves_calls_under_the_strict_profile",
                bound,
                strict_serves,
            ),
            harness::test(
                "a_strict_worker_closes_the_fds_it_does_not_take_and_serves_on",
                bound,
                strict_closes_fds_it_does_not_take,
            ),
        ];
        trials.push(harness::test(
            "without_seccomp_the_other_steps_stop_what_they_can",
            bound,
            layers_without_seccomp,
        ));
        for what in [
            "open-passwd",
            "inet-socket",
            "execve",
            "ptrace-parent",
            "read-parent-memory",
            "signal-parent",
            "fork-bomb",
        ] {
            let name: &'static str = Box::leak(format!("hostile_worker_{what}").into_boxed_str());
            trials.push(harness::test(name, bound, move || hostile_case(what)));
        }
        trials
    }

    /// A command for this binary in child mode `args`.
    fn worker_command(args: &[&str], confinement: Confinement) -> WorkerCommand {
        let mut command = WorkerCommand::current_exe().unwrap();
        command.arg(harness::CHILD).args(args).confine(confinement);
        command
    }

    /// Starts a worker and waits (bounded) for it to end.
    fn run_to_end(args: &[&str], confinement: Confinement) -> ExitReason {
        let (mut worker, _channel) = worker_command(args, confinement).spawn::<POOL>().unwrap();
        worker
            .wait_timeout(PEER)
            .unwrap()
            .unwrap_or_else(|| panic!("worker {args:?} still runs after {PEER:?}"))
    }

    /// The strict profile, without its seccomp step where there is no filter
    /// to install (`spawn` refuses the step there), for the tests that are
    /// not about the filter.
    fn strict() -> Confinement {
        Confinement::strict().seccomp(worker::SECCOMP_AVAILABLE)
    }

    /// Whether this architecture has no seccomp filter; if so, says that
    /// `what` is skipped.
    fn no_filter_here(what: &str) -> bool {
        if !worker::SECCOMP_AVAILABLE {
            println!("skipped{what}: seccompiler builds no filter for this architecture");
        }
        !worker::SECCOMP_AVAILABLE
    }

    /// Whether the kernel refuses this process a user namespace (`EPERM`
    /// from a plain `unshare(CLONE_NEWUSER)` in a child, the crate not
    /// involved): in a chroot, as in the i686 run of `.ci/cross` (see
    /// user_namespaces(7)), or where the kernel forbids them. Says that
    /// `what` is skipped if so.
    fn user_namespaces_refused(what: &str) -> bool {
        let mut probe = harness::child_command(["userns-probe"]);
        let status = common::wait_child(&mut probe.spawn().unwrap(), "userns-probe", PEER);
        match status.code() {
            Some(0) => false,
            Some(77) => {
                println!(
                    "skipped{what}: this process may not create a user namespace (EPERM: a chroot, or the kernel forbids it)"
                );
                true
            }
            _ => panic!("userns-probe: {status:?}"),
        }
    }

    fn signaled(signal: i32) -> ExitReason {
        ExitReason::Signaled {
            signal,
            core_dumped: false,
        }
    }

    fn gets_channel_only() {
        let _serial = common::serial();
        // An fd the pipeline opened without close-on-exec: std would pass it
        // to any child; the worker must not get it.
        let (read, write) = rustix::pipe::pipe().unwrap();
        let before = open_fds();
        assert_eq!(
            run_to_end(&["fds"], Confinement::none()),
            ExitReason::Exited(0)
        );
        assert_eq!(open_fds(), before);
        drop((read, write));
    }

    fn stdio_null_or_a_given_stderr() {
        let mut command = worker_command(&["inspect"], Confinement::none());
        command.null_stdio();
        let (mut worker, channel) = command.spawn::<POOL>().unwrap();
        let mut data = [0u8; 4096];
        let mut fds = heapless::Vec::<OwnedFd, POOL>::new();
        let got = channel.recv_timeout(&mut data, &mut fds, PEER).unwrap();
        let report = String::from_utf8_lossy(&data[..got.data_len]).into_owned();
        for fd in 0..3 {
            assert_eq!(field(&report, &format!("fd{fd}:")), "/dev/null");
        }
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(ExitReason::Exited(0))
        );
        // A log file as stderr, for every worker the command starts.
        let log = memfd(b"");
        let mut command = worker_command(&["panic"], Confinement::none());
        command
            .env("RUST_BACKTRACE", "0")
            .null_stdio()
            .stderr(log.try_clone().unwrap());
        for _ in 0..2 {
            assert_eq!(run_command(&command), ExitReason::Exited(101));
        }
        let logged = String::from_utf8(common::read_all(log.as_fd())).unwrap();
        assert_eq!(logged.matches("a worker panics").count(), 2, "{logged}");
    }

    /// Starts a worker from `command` and waits (bounded) for it to end.
    fn run_command(command: &WorkerCommand) -> ExitReason {
        let (mut worker, _channel) = command.spawn::<POOL>().unwrap();
        worker
            .wait_timeout(PEER)
            .unwrap()
            .expect("the worker ended")
    }

    fn arguments_environment_and_working_directory() {
        let mut command = WorkerCommand::current_exe().unwrap();
        command
            .arg(harness::CHILD)
            .args(["environment", "one", "two words"])
            .env("TEST_VAR", "set")
            .current_dir("/");
        let report = report_of(&command);
        assert_eq!(field(&report, "args:"), "one two words");
        assert_eq!(field(&report, "cwd:"), "/");
        assert_eq!(field(&report, "TEST_VAR:"), "set");
        assert!(field(&report, "vars:").contains("PATH"), "{report}");
        // env_clear: only what was set after it, and the channel's variable.
        command.env_clear().env("TEST_VAR", "again");
        let report = report_of(&command);
        assert_eq!(field(&report, "vars:"), "IPC_UNIXSOCKET_WORKER TEST_VAR");
        assert_eq!(field(&report, "TEST_VAR:"), "again");
        command.env_remove("TEST_VAR");
        assert_eq!(
            field(&report_of(&command), "vars:"),
            "IPC_UNIXSOCKET_WORKER"
        );
    }

    /// Starts a worker from `command` and returns the report it sends.
    fn report_of(command: &WorkerCommand) -> String {
        let (mut worker, channel) = command.spawn::<POOL>().unwrap();
        let mut data = [0u8; 8192];
        let mut fds = heapless::Vec::<OwnedFd, POOL>::new();
        let got = channel.recv_timeout(&mut data, &mut fds, PEER).unwrap();
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(ExitReason::Exited(0))
        );
        String::from_utf8(data[..got.data_len].to_vec()).unwrap()
    }

    fn take_channel_once() {
        assert_eq!(
            run_to_end(&["take-twice"], Confinement::none()),
            ExitReason::Exited(0)
        );
    }

    fn take_channel_not_spawned() {
        // Started by std::process::Command: no CHANNEL_ENV.
        let mut plain = harness::child_command(["not-spawned"]);
        let status = common::wait_child(&mut plain.spawn().unwrap(), "not-spawned", PEER);
        assert!(status.success(), "{status:?}");
        // A forged CHANNEL_ENV naming an fd that was not inherited.
        let mut forged = harness::child_command(["not-spawned"]);
        forged.env(worker::CHANNEL_ENV, "3");
        let status = common::wait_child(&mut forged.spawn().unwrap(), "forged", PEER);
        assert!(status.success(), "{status:?}");
    }

    fn exit_codes() {
        for code in [0u8, 1, 3, 101, 255] {
            let reason = run_to_end(&["exit", &code.to_string()], Confinement::none());
            assert_eq!(reason, ExitReason::Exited(i32::from(code)));
        }
    }

    fn signals() {
        let no_core = || Confinement::none().limit_core_size(0);
        // SIGKILL from the pipeline.
        let (mut worker, _channel) = worker_command(&["sleep"], no_core())
            .spawn::<POOL>()
            .unwrap();
        worker.kill().unwrap();
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(signaled(libc::SIGKILL))
        );
        // SIGSEGV and SIGABRT of its own.
        let segv = run_to_end(&["segv"], no_core());
        assert_eq!(segv, signaled(libc::SIGSEGV));
        assert_eq!(run_to_end(&["abort"], no_core()), signaled(libc::SIGABRT));
        assert!(!segv.is_seccomp_kill());
        if no_filter_here(" (under the filter)") {
            return;
        }
        // Under the seccomp filter, a crash, an abort and a panic are still
        // reported as what they are, not as SIGSYS.
        let filtered = || no_core().seccomp(true);
        assert_eq!(run_to_end(&["segv"], filtered()), signaled(libc::SIGSEGV));
        assert_eq!(run_to_end(&["abort"], filtered()), signaled(libc::SIGABRT));
        // (Without a backtrace: printing one reads the binary's symbols.)
        let mut panics = worker_command(&["panic"], filtered());
        panics.env("RUST_BACKTRACE", "0").null_stdio();
        let (mut worker, _channel) = panics.spawn::<POOL>().unwrap();
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(ExitReason::Exited(101))
        );
    }

    fn seccomp_kill() {
        if no_filter_here("") {
            return;
        }
        let profile = Confinement::none().seccomp(true).limit_core_size(0);
        let reason = run_to_end(&["hostile", "inet-socket", "1"], profile);
        assert_eq!(reason, signaled(libc::SIGSYS));
        assert!(reason.is_seccomp_kill());
        assert_eq!(
            reason.to_string(),
            "killed by SIGSYS (a system call outside its seccomp allowlist)"
        );
    }

    fn parent_death() {
        // Orphans come to this process, so their exit status can be read.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
        for (variant, processes) in [("plain", 1), ("pidns", 3)] {
            let mut middle = harness::child_command(["middle", variant])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(middle.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let status = common::wait_child(&mut middle, "middle", PEER);
            assert!(status.success(), "{status:?}");
            // The worker (or its supervisor, init and the worker): each killed.
            // The worker is reaped first: a namespace's init ends only once
            // every other process of the namespace is reaped.
            let pids: Vec<i32> = line
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
            assert_eq!(pids.len(), processes, "{variant}: {line}");
            for pid in pids.into_iter().rev() {
                let pid = rustix::process::Pid::from_raw(pid).unwrap();
                let pidfd =
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
                let mut watch = [PollFd::new(&pidfd, PollFlags::IN)];
                let ready = poll(&mut watch, Some(&timespec(PEER))).unwrap();
                assert_eq!(
                    ready, 1,
                    "{variant}: {pid:?} outlived its pipeline by {PEER:?}"
                );
                let status = rustix::process::waitid(
                    rustix::process::WaitId::PidFd(pidfd.as_fd()),
                    rustix::process::WaitIdOptions::EXITED,
                )
                .unwrap()
                .unwrap();
                assert_eq!(
                    status.terminating_signal(),
                    Some(libc::SIGKILL),
                    "{variant}: {pid:?}"
                );
            }
        }
        rustix::process::set_child_subreaper(None).unwrap();
    }

    fn drop_kills() {
        let _serial = common::serial();
        let before = open_fds();
        let (worker, channel) = worker_command(&["sleep"], Confinement::none())
            .spawn::<POOL>()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(worker.pid() as i32).unwrap();
        drop(worker);
        // Reaped: the pid is no child of ours any more.
        assert_eq!(
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG).err(),
            Some(rustix::io::Errno::CHILD)
        );
        drop(channel);
        assert_eq!(open_fds(), before);
    }

    fn timespec(d: Duration) -> rustix::event::Timespec {
        rustix::event::Timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        }
    }

    /// A pool of `POOL` frame buffers, buffer k filled with byte k + 1.
    fn pool() -> [OwnedFd; POOL] {
        std::array::from_fn(|k| memfd(&[k as u8 + 1; FRAME]))
    }

    /// Sends the pool with `Configure`.
    fn configure(
        caller: &mut Caller<'_, Frames, POOL, 2>,
        pool: &[OwnedFd; POOL],
    ) -> Result<(), Error> {
        let mut attach = Attach::<POOL>::new();
        let mut slots = heapless::Vec::<FdSlot, POOL>::new();
        for fd in pool {
            let _ = slots.push(attach.attach(fd.as_fd())?);
        }
        let buffers = slots.into_array().expect("POOL slots");
        let request = Request::Configure { buffers };
        let (reply, _) = caller.call(&request, attach.as_slice(), PEER, |_, _| {})?;
        assert_eq!(reply, Reply::Configured);
        Ok(())
    }

    fn poll_loop() {
        let _serial = common::serial();
        let fds_before = open_fds();
        let pool = pool();
        let command = worker_command(&["serve"], strict());
        let (mut worker, channel) = command.spawn::<POOL>().unwrap();
        let (mut out, mut inbox) = ([0u8; 256], [0u8; 256]);
        let mut caller = Caller::<Frames, POOL, 2>::new(channel, &mut out, &mut inbox).unwrap();
        configure(&mut caller, &pool).unwrap();
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC).unwrap();
        let tick = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        timerfd_settime(
            &timer,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: tick,
                it_value: tick,
            },
        )
        .unwrap();

        // 200 frames, one call per timer tick, then a crash during a call;
        // counted from frame 10 on.
        let mut counted = None;
        let (mut seq, mut replies, mut in_flight) = (0u32, 0u32, None);
        let (mut failed_call, mut reason) = (None, None);
        let deadline = Instant::now() + PEER * 4;
        while failed_call.is_none() || reason.is_none() {
            assert!(Instant::now() < deadline, "poll loop stuck");
            if seq == 10 && counted.is_none() {
                counted = Some(common::counting::counters());
            }
            let mut watch = [
                PollFd::new(&worker, PollFlags::IN),
                PollFd::new(&caller, PollFlags::IN),
                PollFd::new(&timer, PollFlags::IN),
            ];
            poll(&mut watch, Some(&timespec(PEER))).unwrap();
            let (died, readable, ticked) = (
                !watch[0].revents().is_empty(),
                !watch[1].revents().is_empty(),
                !watch[2].revents().is_empty(),
            );
            if ticked {
                let mut expirations = [0u8; 8];
                rustix::io::read(&timer, &mut expirations).unwrap();
                if in_flight.is_none() && seq <= 200 {
                    let request = if seq < 200 {
                        Request::Process {
                            seq,
                            buffer: (seq % POOL as u32) as u8,
                        }
                    } else {
                        Request::Crash
                    };
                    in_flight = Some(caller.start(&request, &[], Some(PEER)).unwrap());
                    seq += 1;
                }
            }
            if died {
                reason = worker.try_wait().unwrap();
            }
            if readable {
                loop {
                    match caller.try_incoming() {
                        Ok(None) => break,
                        Ok(Some(Incoming::Reply { cookie, reply, .. })) => {
                            assert_eq!(Some(cookie), in_flight.take());
                            let Reply::Done { seq: got, sum } = reply else {
                                panic!("unexpected reply");
                            };
                            assert_eq!(sum, (got % POOL as u32 + 1) * FRAME as u32);
                            replies += 1;
                        }
                        Ok(Some(Incoming::Failed { cookie, error })) => {
                            assert_eq!(Some(cookie), in_flight.take());
                            failed_call = Some(error);
                        }
                        Ok(Some(other)) => panic!("unexpected {other:?}"),
                        Err(Error::Disconnected) => {
                            failed_call.get_or_insert(Error::Disconnected);
                            break;
                        }
                        Err(error) => panic!("poll: {error}"),
                    }
                }
            }
        }
        let (start, end) = (counted.unwrap(), common::counting::counters());
        assert_eq!(end.0 - start.0, 0, "allocations in the poll loop");
        assert_eq!(replies, 200);
        assert_eq!(failed_call, Some(Error::Disconnected));
        let reason = reason.unwrap();
        assert_eq!(reason.signal(), Some(libc::SIGSEGV), "{reason}");
        drop((caller, worker, timer, pool));
        assert_eq!(open_fds(), fds_before);
    }

    /// The flow a new user tries: a pool of 4 buffers, 200 typed calls from a
    /// poll loop, the worker crashing at frame 100; the pipeline learns why,
    /// restarts it, re-sends the pool and carries on.
    fn newcomer_flow() {
        let _serial = common::serial();
        let before = open_fds();
        let pool = pool();
        let command = worker_command(&["serve"], strict());
        let mut policy = Restart::<10>::new(Duration::from_secs(5));
        let (mut out, mut inbox) = ([0u8; 256], [0u8; 256]);
        let mut reasons = Vec::new();
        let mut frame = 0u32;
        let mut crashed = false;
        let deadline = Instant::now() + PEER * 4;
        'restart: while frame < 200 {
            let (mut worker, channel) = command.spawn::<POOL>().unwrap();
            let mut caller = Caller::<Frames, POOL, 2>::new(channel, &mut out, &mut inbox).unwrap();
            configure(&mut caller, &pool).unwrap();
            while frame < 200 {
                assert!(Instant::now() < deadline, "stuck at frame {frame}");
                let request = if frame == 100 && !crashed {
                    crashed = true;
                    Request::Crash
                } else {
                    Request::Process {
                        seq: frame,
                        buffer: (frame % POOL as u32) as u8,
                    }
                };
                let cookie = caller.start(&request, &[], Some(PEER)).unwrap();
                loop {
                    let mut watch = [
                        PollFd::new(&worker, PollFlags::IN),
                        PollFd::new(&caller, PollFlags::IN),
                    ];
                    poll(&mut watch, Some(&timespec(PEER))).unwrap();
                    if let Some(reason) = worker.try_wait().unwrap() {
                        // The call in flight is lost with the worker.
                        match policy.on_exit(reason) {
                            Decision::Restart { after, .. } => std::thread::sleep(after),
                            Decision::GiveUp { .. } => panic!("gave up"),
                        }
                        reasons.push(reason);
                        continue 'restart;
                    }
                    match caller.try_incoming() {
                        Ok(None) => {}
                        Ok(Some(Incoming::Reply {
                            cookie: got, reply, ..
                        })) => {
                            assert_eq!(got, cookie);
                            let sum = (frame % POOL as u32 + 1) * FRAME as u32;
                            assert_eq!(reply, Reply::Done { seq: frame, sum });
                            frame += 1;
                            break;
                        }
                        // The worker died: its exit reason is on the pidfd.
                        Ok(Some(Incoming::Failed { error, .. })) | Err(error) => {
                            assert_eq!(error, Error::Disconnected);
                        }
                        Ok(Some(other)) => panic!("unexpected {other:?}"),
                    }
                }
            }
            drop(caller);
            assert_eq!(
                worker.wait_timeout(PEER).unwrap(),
                Some(ExitReason::Exited(0))
            );
        }
        assert_eq!(reasons, [signaled(libc::SIGSEGV)]);
        drop(pool);
        assert_eq!(open_fds(), before);
    }

    fn death_during_call_either_order() {
        let _serial = common::serial();
        let before = open_fds();
        for watch_first in [true, false] {
            let command = worker_command(&["serve"], strict());
            let (mut worker, channel) = command.spawn::<POOL>().unwrap();
            let (mut out, mut inbox) = ([0u8; 256], [0u8; 256]);
            let mut caller = Caller::<Frames, POOL, 2>::new(channel, &mut out, &mut inbox).unwrap();
            let cookie = caller.start(&Request::Crash, &[], Some(PEER)).unwrap();
            // The hello may come first: poll until the call ends.
            let call_outcome = |caller: &mut Caller<'_, Frames, POOL, 2>| loop {
                let mut watch = [PollFd::new(&*caller, PollFlags::IN)];
                assert_eq!(poll(&mut watch, Some(&timespec(PEER))).unwrap(), 1);
                match caller.try_incoming() {
                    Ok(None) => {}
                    Ok(Some(Incoming::Failed { cookie: got, error })) => {
                        assert_eq!(got, cookie);
                        return error;
                    }
                    Err(error) => return error,
                    other => panic!("unexpected {other:?}"),
                }
            };
            let segv = Some(signaled(libc::SIGSEGV));
            if watch_first {
                let mut watch = [PollFd::new(&worker, PollFlags::IN)];
                assert_eq!(poll(&mut watch, Some(&timespec(PEER))).unwrap(), 1);
                assert_eq!(worker.try_wait().unwrap(), segv);
                assert_eq!(call_outcome(&mut caller), Error::Disconnected);
            } else {
                assert_eq!(call_outcome(&mut caller), Error::Disconnected);
                let reason = worker.wait_timeout(PEER).unwrap();
                assert_eq!(reason, segv);
            }
        }
        assert_eq!(open_fds(), before);
    }

    fn restart_policy() {
        // A worker that dies at once, every time.
        let command = worker_command(&["exit", "7"], Confinement::none());
        let first = Duration::from_millis(50);
        let max = Duration::from_millis(400);
        let mut policy = Restart::<6>::new(Duration::from_secs(30)).backoff(first, max);
        let mut delays = Vec::new();
        let mut last_death: Option<(Instant, Duration)> = None;
        loop {
            let (mut worker, _channel) = command.spawn::<POOL>().unwrap();
            let reason = worker.wait_timeout(PEER).unwrap().expect("died at once");
            let died = Instant::now();
            assert_eq!(reason, ExitReason::Exited(7));
            if let Some((previous, after)) = last_death {
                // Between two deaths: the backoff, then a start of a few ms.
                let gap = died - previous;
                assert!(
                    gap >= after,
                    "restarted {gap:?} after a death, backoff {after:?}"
                );
                assert!(
                    gap < after + PEER,
                    "restart took {gap:?}, backoff {after:?}"
                );
                delays.push((after, gap));
            }
            match policy.on_exit(reason) {
                Decision::Restart { after, reason, .. } => {
                    assert_eq!(reason, ExitReason::Exited(7));
                    last_death = Some((died, after));
                    std::thread::sleep(after); // the backoff itself
                }
                Decision::GiveUp { deaths, .. } => {
                    assert_eq!(deaths, 6);
                    break;
                }
            }
        }
        let backoffs: Vec<_> = delays.iter().map(|(after, _)| after.as_millis()).collect();
        assert_eq!(backoffs, [50, 100, 200, 400, 400]);
        eprintln!("backoff (bound, measured gap between deaths): {delays:?}");
    }

    fn fd_inheritance_stress() {
        let _serial = common::serial();
        let rounds: usize = std::env::var("WORKER_STRESS_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(375);
        let before = open_fds();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for thread in 0..8 {
                scope.spawn(move || {
                    let command = worker_command(&["fds"], Confinement::none());
                    for round in 0..rounds {
                        let (mut worker, channel) = command.spawn::<POOL>().unwrap();
                        let mut unrelated = harness::child_command(["unrelated"])
                            .stdin(Stdio::null())
                            .spawn()
                            .unwrap();
                        let status = common::wait_child(&mut unrelated, "unrelated child", PEER);
                        assert!(
                            status.success(),
                            "thread {thread} round {round}: {status:?}"
                        );
                        let reason = worker.wait_timeout(PEER).unwrap();
                        assert_eq!(
                            reason,
                            Some(ExitReason::Exited(0)),
                            "thread {thread} round {round}"
                        );
                        drop(channel);
                    }
                });
            }
        });
        assert_eq!(open_fds(), before);
        eprintln!(
            "{} rounds ({} workers, {} unrelated children) in {:?}",
            8 * rounds,
            8 * rounds,
            8 * rounds,
            started.elapsed()
        );
    }

    /// Starts an `inspect` worker under `profile` and returns its report.
    fn inspect_under(profile: Confinement) -> String {
        inspect_under_mode("inspect", profile)
    }

    /// Starts a worker of `mode` under `profile` and returns the report it
    /// sends.
    fn inspect_under_mode(mode: &str, profile: Confinement) -> String {
        let (mut worker, channel) = worker_command(&[mode], profile).spawn::<POOL>().unwrap();
        let mut data = [0u8; 4096];
        let mut fds = heapless::Vec::<OwnedFd, POOL>::new();
        let got = channel.recv_timeout(&mut data, &mut fds, PEER).unwrap();
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(ExitReason::Exited(0))
        );
        String::from_utf8(data[..got.data_len].to_vec()).unwrap()
    }

    fn field<'a>(report: &'a str, key: &str) -> &'a str {
        report
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {report}"))
    }

    fn own_ns(ns: &str) -> String {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .display()
            .to_string()
    }

    fn confine_no_new_privs() {
        let off = inspect_under(Confinement::none());
        assert_eq!(field(&off, "NoNewPrivs:"), "0");
        let on = inspect_under(Confinement::none().no_new_privs(true));
        assert_eq!(field(&on, "NoNewPrivs:"), "1");
    }

    fn confine_namespaces() {
        let plain = inspect_under(Confinement::none());
        for ns in ["net", "ipc", "uts", "mnt"] {
            assert_eq!(field(&plain, &format!("ns.{ns}:")), own_ns(ns));
        }
        let each = [
            ("net", Namespaces::NET),
            ("ipc", Namespaces::IPC),
            ("uts", Namespaces::UTS),
            ("mnt", Namespaces::MOUNT),
        ];
        for (ns, flag) in each {
            let report = inspect_under(Confinement::none().namespaces(flag));
            assert_ne!(field(&report, &format!("ns.{ns}:")), own_ns(ns), "{ns}");
            for (other, _) in each.iter().filter(|(other, _)| *other != ns) {
                assert_eq!(field(&report, &format!("ns.{other}:")), own_ns(other));
            }
        }
    }

    fn confine_pid_namespace() {
        let plain = inspect_under(Confinement::none());
        assert_eq!(field(&plain, "ns.pid:"), own_ns("pid"));
        let report = inspect_under(Confinement::none().namespaces(Namespaces::PID));
        assert_ne!(field(&report, "ns.pid:"), own_ns("pid"));
        // pid 1 is the namespace's init; the worker is pid 2.
        assert_eq!(field(&report, "pid:"), "2");

        // Nothing of the namespace outlives the worker: killed through the
        // handle, or ending on its own.
        for kill in [true, false] {
            let (mut worker, _channel) =
                worker_command(&["sleep"], Confinement::none().namespaces(Namespaces::PID))
                    .spawn::<POOL>()
                    .unwrap();
            let pid = worker.pid();
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
            let pidfds: Vec<OwnedFd> = children
                .split_whitespace()
                .map(|child| {
                    let child = rustix::process::Pid::from_raw(child.parse().unwrap()).unwrap();
                    rustix::process::pidfd_open(child, rustix::process::PidfdFlags::empty())
                        .unwrap()
                })
                .collect();
            assert_eq!(pidfds.len(), 2, "init and the worker: {children:?}");
            if kill {
                worker.kill().unwrap();
            } else {
                // The worker, pid 2 inside, ends by a signal of its own.
                rustix::process::pidfd_send_signal(&pidfds[1], rustix::process::Signal::TERM)
                    .unwrap();
            }
            let reason = worker.wait_timeout(PEER).unwrap();
            assert_eq!(
                reason.and_then(|r| r.signal()),
                Some(if kill { libc::SIGKILL } else { libc::SIGTERM })
            );
            for pidfd in &pidfds {
                let mut watch = [PollFd::new(pidfd, PollFlags::IN)];
                assert_eq!(
                    poll(&mut watch, Some(&timespec(PEER))).unwrap(),
                    1,
                    "a process of the namespace lives on"
                );
            }
        }
    }

    fn pid_namespace_exit_reasons() {
        let _serial = common::serial();
        let before = open_fds();
        let pidns = || Confinement::none().namespaces(Namespaces::PID);
        assert_eq!(run_to_end(&["exit", "3"], pidns()), ExitReason::Exited(3));
        assert_eq!(run_to_end(&["segv"], pidns()), signaled(libc::SIGSEGV));
        assert_eq!(run_to_end(&["abort"], pidns()), signaled(libc::SIGABRT));
        if !no_filter_here(" (a seccomp kill through the supervisor)") {
            let filtered = pidns().seccomp(true);
            assert_eq!(
                run_to_end(&["hostile", "inet-socket", "1"], filtered),
                signaled(libc::SIGSYS)
            );
        }
        let (mut worker, channel) = worker_command(&["sleep"], pidns()).spawn::<POOL>().unwrap();
        worker.kill().unwrap();
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(signaled(libc::SIGKILL))
        );
        // The worker inside went with its supervisor: the channel hangs up.
        let mut data = [0u8; 8];
        let mut fds = heapless::Vec::<OwnedFd, POOL>::new();
        assert_eq!(
            channel.recv_timeout(&mut data, &mut fds, PEER).unwrap_err(),
            Error::Disconnected
        );
        drop((worker, channel));
        assert_eq!(open_fds(), before);
    }

    fn confine_user_namespace() {
        if user_namespaces_refused("") {
            return;
        }
        let report = inspect_under(
            Confinement::none().namespaces(Namespaces::USER | Namespaces::NET | Namespaces::IPC),
        );
        assert_ne!(field(&report, "ns.user:"), own_ns("user"));
        assert_ne!(field(&report, "ns.net:"), own_ns("net"));
        // Its own ids, mapped to themselves; no groups.
        let uid = rustix::process::geteuid().as_raw();
        assert_eq!(field(&report, "Uid:"), format!("{uid} {uid} {uid} {uid}"));
    }

    fn strict_profile_from_a_pipeline_that_is_not_root() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to become another uid");
            return;
        }
        // The strict profile of a pipeline that is not root has a user
        // namespace.
        if user_namespaces_refused("") {
            return;
        }
        let pipeline = Confinement::none().user(worker::NOBODY, worker::NOBODY);
        let report = inspect_under_mode("nonroot-pipeline", pipeline);
        assert_ne!(field(&report, "ns.user:"), own_ns("user"));
        for ns in ["pid", "net", "ipc", "uts", "mnt"] {
            assert_ne!(field(&report, &format!("ns.{ns}:")), own_ns(ns), "{ns}");
        }
        assert_eq!(field(&report, "pid:"), "2");
        assert_eq!(field(&report, "Uid:"), "65534 65534 65534 65534");
        assert_eq!(field(&report, "NoNewPrivs:"), "1");
        assert_eq!(field(&report, "strict:"), "exited with code 0");
    }

    fn confine_ids() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let report = inspect_under(Confinement::none().user(worker::NOBODY, worker::NOBODY));
        assert_eq!(field(&report, "Uid:"), "65534 65534 65534 65534");
        assert_eq!(field(&report, "Gid:"), "65534 65534 65534 65534");
        assert_eq!(field(&report, "Groups:"), "");
    }

    fn confine_landlock() {
        // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) reads no memory.
        let abi = unsafe { libc::syscall(444, std::ptr::null::<u8>(), 0usize, 1u32) };
        if abi < 6 {
            eprintln!("skipped: Landlock ABI {abi} (6 or later needed for signal scoping)");
            return;
        }
        eprintln!("Landlock ABI {abi}");
        // Refused with an error, not a kill: the worker lives on to say so.
        let parent = std::process::id().to_string();
        let refused = ExitReason::Exited(i32::from(REFUSED));
        for what in [
            "open-passwd",
            "execve",
            "read-parent-memory",
            "signal-parent",
        ] {
            let profile = Confinement::none().landlock(true);
            let reason = run_to_end(&["hostile", what, &parent], profile);
            assert_eq!(reason, refused, "{what}");
        }
        // With the strict profile too (and its filter where there is one):
        // the worker still serves calls.
        let pool = pool();
        let command = worker_command(&["serve"], strict().landlock(true));
        let mut worker = serve_calls(&command, &pool, 10, |worker| {
            assert_eq!(
                worker.is_seccomp_filtered().unwrap(),
                worker::SECCOMP_AVAILABLE
            );
        });
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(ExitReason::Exited(0))
        );
    }

    fn confine_rlimits() {
        let report = inspect_under(
            Confinement::none()
                .limit_open_files(16)
                .limit_address_space(2 << 30)
                .limit_core_size(0),
        );
        assert_eq!(field(&report, "rlimit.nofile:"), "Some(16)");
        assert_eq!(
            field(&report, "rlimit.as:"),
            format!("Some({})", 2u64 << 30)
        );
        assert_eq!(field(&report, "rlimit.core:"), "Some(0)");
    }

    fn confine_seccomp() {
        if no_filter_here("") {
            return;
        }
        let (worker, channel) = worker_command(&["serve"], Confinement::none().seccomp(true))
            .spawn::<POOL>()
            .unwrap();
        let (mut out, mut inbox) = ([0u8; 256], [0u8; 256]);
        let mut caller = Caller::<Frames, POOL, 2>::new(channel, &mut out, &mut inbox).unwrap();
        configure(&mut caller, &pool()).unwrap(); // it has taken its channel
        assert!(worker.is_seccomp_filtered().unwrap());
        let (plain, _channel) = worker_command(&["sleep"], Confinement::none())
            .spawn::<POOL>()
            .unwrap();
        assert!(!plain.is_seccomp_filtered().unwrap());
    }

    /// Where seccompiler builds no filter, a profile with the seccomp step is
    /// refused at `spawn`, before anything starts, and a worker told to
    /// install a filter (a forged `CHANNEL_ENV`) gets the same error from
    /// `take_channel`: never a worker running unfiltered.
    fn seccomp_refused_without_a_filter() {
        if worker::SECCOMP_AVAILABLE {
            println!(
                "skipped: seccompiler builds a filter here (confine_seccomp_filter_is_installed)"
            );
            return;
        }
        let _serial = common::serial();
        let before = open_fds();
        for profile in [
            Confinement::none().seccomp(true),
            Confinement::strict(),
            Confinement::none().landlock(true).seccomp(true),
        ] {
            let got = worker_command(&["exit", "0"], profile).spawn::<POOL>();
            assert_eq!(got.err(), Some(Error::SeccompUnavailable));
        }
        assert_eq!(open_fds(), before);

        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let raw = theirs.as_raw_fd();
        let mut child = harness::child_command(["seccomp-unavailable"]);
        child.env(worker::CHANNEL_ENV, "3 seccomp");
        // SAFETY: between fork and exec the closure makes one system call
        // (dup2, or fcntl if the socket is at 3 already) and allocates
        // nothing.
        unsafe {
            child.pre_exec(move || {
                let rc = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = common::wait_child(&mut child.spawn().unwrap(), "seccomp-unavailable", PEER);
        assert!(status.success(), "{status:?}");
        drop((ours, theirs));
    }

    /// Starts a `serve` worker, configures it and makes `calls` calls;
    /// `check` sees the worker while the channel is still open.
    fn serve_calls(
        command: &WorkerCommand,
        pool: &[OwnedFd; POOL],
        calls: u32,
        check: impl FnOnce(&Worker),
    ) -> Worker {
        let (worker, channel) = command.spawn::<POOL>().unwrap();
        let (mut out, mut inbox) = ([0u8; 256], [0u8; 256]);
        let mut caller = Caller::<Frames, POOL, 2>::new(channel, &mut out, &mut inbox).unwrap();
        configure(&mut caller, pool).unwrap();
        check(&worker);
        for seq in 0..calls {
            let request = Request::Process {
                seq,
                buffer: (seq % POOL as u32) as u8,
            };
            let (reply, _) = caller.call(&request, &[], PEER, |_, _| {}).unwrap();
            assert_eq!(
                reply,
                Reply::Done {
                    seq,
                    sum: (seq % POOL as u32 + 1) * FRAME as u32
                }
            );
        }
        worker
    }

    fn strict_serves() {
        let pool = pool();
        let command = worker_command(&["serve"], strict());
        let mut worker = serve_calls(&command, &pool, 200, |worker| {
            assert_eq!(
                worker.is_seccomp_filtered().unwrap(),
                worker::SECCOMP_AVAILABLE
            );
        });
        // The caller is gone: the worker sees the hang-up and exits 0.
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(ExitReason::Exited(0))
        );
    }

    /// Under the strict profile (its allowlist), the fds a worker does not
    /// take are closed the way the crate closes them everywhere (a look at
    /// `SO_LINGER` first): a request's fd its handler leaves unclaimed, and
    /// the fds of a record the responder rejects. The worker is not killed
    /// for it, serves the next call, and exits 0 at the hang-up.
    fn strict_closes_fds_it_does_not_take() {
        let pool = pool();
        let (mut worker, channel) = worker_command(&["serve"], strict())
            .spawn::<POOL>()
            .unwrap();
        let (mut out, mut inbox) = ([0u8; 256], [0u8; 256]);
        let mut caller = Caller::<Frames, POOL, 2>::new(channel, &mut out, &mut inbox).unwrap();
        configure(&mut caller, &pool).unwrap();
        let unclaimed = memfd(b"not claimed");
        let process = |seq| Request::Process { seq, buffer: 0 };
        let done = |seq| Reply::Done {
            seq,
            sum: FRAME as u32,
        };
        let (reply, _) = caller
            .call(&process(1), &[unclaimed.as_fd()], PEER, |_, _| {})
            .unwrap();
        assert_eq!(reply, done(1));
        // A record with a bad magic and two fds: rejected, fds closed.
        let mut junk = common::header(2, 0);
        junk[0] ^= 0xff;
        common::send_raw(&caller, &junk, &[unclaimed.as_fd(), pool[0].as_fd()]);
        let (reply, _) = caller.call(&process(2), &[], PEER, |_, _| {}).unwrap();
        assert_eq!(reply, done(2));
        assert_eq!(worker.try_wait().unwrap(), None, "the worker is alive");
        drop(caller);
        assert_eq!(
            worker.wait_timeout(PEER).unwrap(),
            Some(ExitReason::Exited(0))
        );
    }

    /// RssAnon of this process, in kB.
    fn rss_anon_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        field(&status, "RssAnon:")
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    }

    fn hostile_case(what: &'static str) {
        // Without the filter some attempts succeed: see
        // `without_seccomp_the_other_steps_stop_what_they_can`.
        if no_filter_here("") {
            return;
        }
        let _serial = common::serial();
        let parent = std::process::id().to_string();
        let pool = pool();
        let hostile = worker_command(&["hostile", what, &parent], Confinement::strict());
        let healthy = worker_command(&["serve"], Confinement::strict());
        let mut policy =
            Restart::<10>::new(Duration::from_secs(5)).backoff(Duration::ZERO, Duration::ZERO);
        let mut baseline = None;
        for round in 0..5 {
            let (mut worker, channel) = hostile.spawn::<POOL>().unwrap();
            let reason = worker
                .wait_timeout(PEER)
                .unwrap()
                .expect("the attempt ended");
            assert_ne!(
                reason,
                ExitReason::Exited(i32::from(ESCAPED)),
                "{what} succeeded"
            );
            assert!(
                reason.is_seccomp_kill() || reason == ExitReason::Exited(i32::from(REFUSED)),
                "{what}: {reason}"
            );
            let decision = policy.on_exit(reason);
            assert!(matches!(decision, Decision::Restart { .. }), "{decision}");
            if round == 0 {
                eprintln!("{what}: {decision}");
            }
            drop((worker, channel));
            // Restarted: a healthy worker serves calls with the same pool.
            drop(serve_calls(&healthy, &pool, 3, |_| {}));
            if round == 0 {
                baseline = Some((open_fds(), rss_anon_kb()));
            }
        }
        let (fds, rss) = baseline.unwrap();
        assert_eq!(open_fds(), fds, "fds after 5 rounds");
        let grown = rss_anon_kb().saturating_sub(rss);
        assert!(grown < 1024, "RssAnon grew by {grown} kB over 4 rounds");
    }

    /// What the strict profile stops without its seccomp filter (the README's
    /// threat model rests on this table): the pid namespace hides the
    /// pipeline, uid `nobody` keeps it from the pipeline's memory; files that
    /// anyone may read, sockets (in an empty network namespace), `execve` and
    /// `fork` remain.
    fn layers_without_seccomp() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (uid nobody)");
            return;
        }
        let parent = std::process::id().to_string();
        let refused = ExitReason::Exited(i32::from(REFUSED));
        let escaped = ExitReason::Exited(i32::from(ESCAPED));
        let expected = [
            ("open-passwd", escaped),
            ("inet-socket", escaped),
            ("execve", ExitReason::Exited(0)), // it became /bin/true
            ("ptrace-parent", refused),
            ("read-parent-memory", refused),
            ("signal-parent", refused),
            ("fork-bomb", escaped),
        ];
        for (what, outcome) in expected {
            let profile = Confinement::strict().seccomp(false);
            let reason = run_to_end(&["hostile", what, &parent], profile);
            assert_eq!(reason, outcome, "{what}");
        }
        // Unconfined, as the pipeline's uid, all but ptrace succeed (ptrace
        // would stop this test process: not tried).
        let unconfined = [
            ("open-passwd", escaped),
            ("inet-socket", escaped),
            ("execve", ExitReason::Exited(0)),
            ("read-parent-memory", escaped),
            ("signal-parent", escaped),
            ("fork-bomb", escaped),
        ];
        for (what, outcome) in unconfined {
            let reason = run_to_end(&["hostile", what, &parent], Confinement::none());
            assert_eq!(reason, outcome, "{what} unconfined");
        }
    }
}
