//! Benchmark for `ipc-unixsocket`: round-trip latency, one-way throughput,
//! allocations and memory, against the raw-syscall floor, libcamera's
//! two-datagram design, std's `UnixDatagram` and alternatives from the
//! package registry.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml -- [options]
//! ```
//!
//! See `bench/README.md` and `--help`.

mod alloc_count;
mod calls;
mod harness;
mod memory;
mod report;
mod variants;

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use alloc_count::{Counting, allocations};
use harness::{
    Bench, CREDIT_EVERY, Mode, Placement, PlacementKind, Shape, Variant, allowed_cpus, pin, start,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

const HELP: &str = "\
ipc-unixsocket benchmark

USAGE:
    cargo run --release --manifest-path bench/Cargo.toml -- [OPTIONS]

OPTIONS:
    --placement pinned|split|unpinned
                        pinned (default): both ends on one CPU; split: the two
                        ends on two different CPUs; unpinned: no affinity
    --cpu N[,M]         CPU for pinned (default: the last allowed CPU), or the
                        two CPUs for split (default: the first two allowed)
    --reps N            timed repetitions per cell (default 21; odd is best)
    --rep-ms MS         target duration of one repetition (default 40)
    --quick             development run: 3 reps of ~5 ms, no binary-size build
    --shapes LIST       thread,process (default both)
    --variants LIST     subset of: crate,crate-poll,crate-frame,raw,raw-poll,raw-bare,libcamera,
                        std-dgram,nix,sendfd,uds (default all)
    --sizes LIST        data sizes in bytes (default 0,64,4096,65536)
    --fds LIST          fd counts (default 0,1,4; at most 4)
    --fixed-n N         N operations per repetition instead of calibrating
                        (for instruction counts under valgrind --tool=callgrind)
    --no-throughput     skip the one-way throughput cells
    --no-calls          skip the typed-call section
    --calls-only        run only the typed-call section (no channel variants,
                        no throughput, no memory figures)
    --calls-cases LIST  subset of: small,large,frame (default all)
    --calls-variants LIST
                        subset of: channel,call,call-no-deadline,ipcpipe,
                        frame-by-id,frame-fd-each (default all)
    --no-binary-sizes   skip building the echo binaries for the size figures
    --out DIR           output directory (default bench/results)
    -h, --help          this text

Writes DIR/<placement>.md, .json, .svg and -median-rt.svg.
";

pub struct Config {
    pub placement: Placement,
    pub reps: usize,
    pub rep_ms: f64,
    pub shapes: Vec<Shape>,
    pub variants: Vec<Variant>,
    pub sizes: Vec<usize>,
    pub fds: Vec<usize>,
    pub throughput: bool,
    pub binary_sizes: bool,
    pub out: PathBuf,
    pub command: String,
    /// Fixed operations per repetition instead of calibrating (for
    /// instruction counting under callgrind).
    pub fixed_n: Option<u64>,
    /// The typed-call section.
    pub calls: bool,
    /// Only the typed-call section.
    pub calls_only: bool,
    pub calls_cases: Vec<calls::Case>,
    pub calls_variants: Vec<calls::CallVariant>,
}

fn parse_list<T>(text: &str, item: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    text.split(',')
        .map(|s| item(s.trim()).ok_or_else(|| format!("bad list item {s:?}")))
        .collect()
}

fn parse_args(args: &[String]) -> Result<Option<Config>, String> {
    let mut kind = PlacementKind::Pinned;
    let mut cpus: Option<Vec<usize>> = None;
    let mut reps = 21;
    let mut rep_ms = 40.0;
    let mut quick = false;
    let mut shapes = vec![Shape::Thread, Shape::Process];
    let mut variants = Variant::ALL.to_vec();
    let mut sizes = vec![0, 64, 4096, 65536];
    let mut fds = vec![0, 1, 4];
    let mut throughput = true;
    let mut binary_sizes = true;
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    let mut reps_set = false;
    let mut rep_ms_set = false;
    let mut fixed_n = None;
    let mut calls = true;
    let mut calls_only = false;
    let mut calls_cases = calls::Case::ALL.to_vec();
    let mut calls_variants = calls::CallVariant::ALL.to_vec();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let mut value = || {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "--placement" => {
                kind = match value()?.as_str() {
                    "pinned" => PlacementKind::Pinned,
                    "split" => PlacementKind::Split,
                    "unpinned" => PlacementKind::Unpinned,
                    other => return Err(format!("unknown placement {other:?}")),
                }
            }
            "--cpu" => cpus = Some(parse_list(&value()?, |s| s.parse().ok())?),
            "--reps" => {
                reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?;
                reps_set = true;
            }
            "--rep-ms" => {
                rep_ms = value()?.parse().map_err(|e| format!("--rep-ms: {e}"))?;
                rep_ms_set = true;
            }
            "--quick" => quick = true,
            "--fixed-n" => fixed_n = Some(value()?.parse().map_err(|e| format!("--fixed-n: {e}"))?),
            "--shapes" => {
                shapes = parse_list(&value()?, |s| match s {
                    "thread" => Some(Shape::Thread),
                    "process" => Some(Shape::Process),
                    _ => None,
                })?
            }
            "--variants" => variants = parse_list(&value()?, Variant::from_id)?,
            "--sizes" => sizes = parse_list(&value()?, |s| s.parse().ok())?,
            "--fds" => fds = parse_list(&value()?, |s| s.parse().ok())?,
            "--no-throughput" => throughput = false,
            "--no-calls" => calls = false,
            "--calls-only" => calls_only = true,
            "--calls-cases" => calls_cases = parse_list(&value()?, calls::Case::from_id)?,
            "--calls-variants" => {
                calls_variants = parse_list(&value()?, calls::CallVariant::from_id)?
            }
            "--no-binary-sizes" => binary_sizes = false,
            "--out" => out = PathBuf::from(value()?),
            other => return Err(format!("unknown option {other:?} (try --help)")),
        }
        i += 1;
    }
    if quick {
        if !reps_set {
            reps = 3;
        }
        if !rep_ms_set {
            rep_ms = 5.0;
        }
        binary_sizes = false;
    }
    if calls_only {
        calls = true;
        variants.clear();
        throughput = false;
        binary_sizes = false;
    }
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if let Some(&bad) = sizes
        .iter()
        .find(|&&s| s > variants::MAX_DATA || s == harness::SENTINEL_LEN)
    {
        return Err(format!(
            "data size {bad} not allowed (max {}, and {} is the stop sentinel)",
            variants::MAX_DATA,
            harness::SENTINEL_LEN
        ));
    }
    if let Some(&bad) = fds.iter().find(|&&f| f > variants::MAX_FDS) {
        return Err(format!("fd count {bad} over {}", variants::MAX_FDS));
    }
    // The floors are always measured: every ratio needs them.
    for floor in [Variant::Raw, Variant::RawPoll] {
        if variants.iter().any(|v| v.floor() == floor) && !variants.contains(&floor) {
            variants.push(floor);
        }
    }
    variants.sort_by_key(|v| Variant::ALL.iter().position(|a| a == v));
    variants.dedup();

    let allowed = allowed_cpus().map_err(|e| format!("sched_getaffinity: {e}"))?;
    let placement = match kind {
        PlacementKind::Pinned => {
            let cpu = match &cpus {
                Some(list) => list[0],
                None => *allowed.last().ok_or("no allowed CPU")?,
            };
            Placement {
                kind,
                local: Some(cpu),
                peer: Some(cpu),
            }
        }
        PlacementKind::Split => {
            let (a, b) = match &cpus {
                Some(list) if list.len() >= 2 => (list[0], list[1]),
                Some(_) => return Err("--placement split needs --cpu A,B".into()),
                None if allowed.len() >= 2 => (allowed[0], allowed[1]),
                None => return Err("--placement split needs two allowed CPUs".into()),
            };
            Placement {
                kind,
                local: Some(a),
                peer: Some(b),
            }
        }
        PlacementKind::Unpinned => Placement {
            kind,
            local: None,
            peer: None,
        },
    };
    Ok(Some(Config {
        placement,
        reps,
        rep_ms,
        shapes,
        variants,
        sizes,
        fds,
        throughput,
        binary_sizes,
        out,
        fixed_n,
        calls,
        calls_only,
        calls_cases,
        calls_variants,
        command: format!(
            "cargo run --release --manifest-path bench/Cargo.toml --{}",
            args.iter().map(|a| format!(" {a}")).collect::<String>()
        ),
    }))
}

/// One measured cell of one variant.
pub struct Cell {
    pub shape: Shape,
    pub variant: Variant,
    pub data: usize,
    pub nfds: usize,
    /// Operations (round trips, or messages for throughput) per repetition.
    pub n: u64,
    /// Nanoseconds per operation (elapsed / n), one entry per repetition,
    /// in rep order.
    pub ns: Vec<f64>,
    /// Round trips only: the median of the n individually timed round
    /// trips, one entry per repetition (empty for throughput).
    pub typical: Vec<f64>,
    /// Heap allocations counted during the timed repetitions.
    pub allocs: u64,
    /// Messages whose both ends those allocations cover.
    pub messages: u64,
}

/// Allocations reported by a peer process at exit (serialized as is into
/// the JSON report).
#[derive(serde::Serialize)]
pub struct PeerAllocs {
    pub shape: Shape,
    pub mode: &'static str,
    pub variant: Variant,
    pub messages: u64,
    pub allocs: u64,
}

pub struct Results {
    pub pingpong: Vec<Cell>,
    pub throughput: Vec<Cell>,
    pub peer_allocs: Vec<PeerAllocs>,
    pub calls: Vec<calls::CallCell>,
    pub calls_peers: Vec<calls::CallPeerAllocs>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--peer") {
        if let Err(error) = harness::peer_main(&args) {
            eprintln!("peer: {error}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("--calls-peer") {
        if let Err(error) = calls::peer_main(&args) {
            eprintln!("calls peer: {error}");
            std::process::exit(1);
        }
        return;
    }
    let config = match parse_args(&args) {
        Ok(Some(config)) => config,
        Ok(None) => return,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(&config) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run(config: &Config) -> io::Result<()> {
    let wall = Instant::now();
    let started = report::now_utc();
    let load_start = report::loadavg();
    eprintln!("placement: {}", config.placement.describe());

    eprintln!("memory figures...");
    let memory = memory::measure(config.binary_sizes);

    pin(config.placement.local)?;
    let mut results = Results {
        pingpong: Vec::new(),
        throughput: Vec::new(),
        peer_allocs: Vec::new(),
        calls: Vec::new(),
        calls_peers: Vec::new(),
    };
    let data = vec![0xA5u8; variants::MAX_DATA];
    if !config.variants.is_empty() {
        for &shape in &config.shapes {
            run_pingpong(config, shape, &data, &mut results)?;
        }
    }
    if config.calls {
        for &shape in &config.shapes {
            calls::run_section(config, shape, &mut results.calls, &mut results.calls_peers)?;
        }
    }
    if config.throughput {
        for &shape in &config.shapes {
            run_throughput(config, shape, &data[..64], &mut results)?;
        }
    }
    let wall = wall.elapsed();
    let meta = report::Meta {
        started,
        placement: config.placement.describe(),
        placement_id: config.placement.kind.id(),
        reps: config.reps,
        rep_ms: config.rep_ms,
        command: config.command.clone(),
        load_start,
        load_end: report::loadavg(),
        wall,
        build: memory.build_time,
    };
    std::fs::create_dir_all(&config.out)?;
    let paths = report::write_all(config, &meta, &memory, &results)?;
    for path in paths {
        eprintln!("wrote {}", path.display());
    }
    let line = format!(
        "total wall time: {:.1} s ({:.1} s of it building the echo binaries for their sizes)",
        wall.as_secs_f64(),
        memory.build_time.as_secs_f64()
    );
    eprintln!("{line}");
    println!("{line}");
    Ok(())
}

/// One measured operation batch: `n` operations on a variant; returns the
/// elapsed time and, for round trips, the median single round trip.
type Op<'a> = dyn FnMut(&mut dyn Bench, u64) -> io::Result<(Duration, Option<f64>)> + 'a;

/// Ops per repetition so that one repetition takes about `rep_ms`,
/// estimated on `bench` (which this also warms up).
fn calibrate(
    bench: &mut dyn Bench,
    rep_ms: f64,
    op: &mut Op<'_>,
    multiple: u64,
) -> io::Result<u64> {
    let probe = Duration::from_secs_f64((rep_ms / 4.0).clamp(2.0, 20.0) / 1000.0);
    let mut n = 8;
    let elapsed = loop {
        let (elapsed, _) = op(bench, n)?;
        if elapsed >= probe || n >= 1 << 24 {
            break elapsed;
        }
        n *= 2;
    };
    let per_op = elapsed.as_secs_f64() / n as f64;
    let n = ((rep_ms / 1000.0) / per_op).clamp(32.0, 4.0e6) as u64;
    Ok(n.div_ceil(multiple) * multiple)
}

struct Sample {
    ns: Vec<f64>,
    typical: Vec<f64>,
    allocs: u64,
}

fn measure_cells(
    config: &Config,
    benches: &mut [(Variant, Box<dyn Bench>)],
    active: &[usize],
    n: u64,
    op: &mut Op<'_>,
    warm_multiple: u64,
) -> io::Result<Vec<Sample>> {
    let mut samples: Vec<Sample> = (0..active.len())
        .map(|_| Sample {
            ns: Vec::with_capacity(config.reps),
            typical: Vec::with_capacity(config.reps),
            allocs: 0,
        })
        .collect();
    let warm = (n / 16).clamp(4, 512).div_ceil(warm_multiple) * warm_multiple;
    for &index in active {
        benches[index].1.reserve(n);
        op(benches[index].1.as_mut(), (n / 4).max(warm))?;
    }
    for rep in 0..config.reps {
        // Interleave the variants and rotate their order every repetition,
        // so that drift in machine load hits them all alike.
        for k in 0..active.len() {
            let slot = (k + rep) % active.len();
            let bench = benches[active[slot]].1.as_mut();
            op(bench, warm)?;
            let before = allocations();
            let (elapsed, typical) = op(bench, n)?;
            let after = allocations();
            let sample = &mut samples[slot];
            sample.ns.push(elapsed.as_nanos() as f64 / n as f64);
            sample.typical.extend(typical);
            sample.allocs += after - before;
        }
    }
    Ok(samples)
}

fn run_pingpong(
    config: &Config,
    shape: Shape,
    data: &[u8],
    results: &mut Results,
) -> io::Result<()> {
    let mut benches = Vec::new();
    for &variant in &config.variants {
        benches.push((
            variant,
            start(variant, shape, Mode::Echo, &config.placement)?,
        ));
    }
    for &size in &config.sizes {
        for &nfds in &config.fds {
            let active: Vec<usize> = (0..benches.len())
                .filter(|&i| nfds == 0 || !benches[i].0.bytes_only())
                .collect();
            let payload = &data[..size];
            let mut op = |bench: &mut dyn Bench, n: u64| {
                bench
                    .pingpong(payload, nfds, n)
                    .map(|(d, typical)| (d, Some(typical)))
            };
            let calibrator = active
                .iter()
                .copied()
                .find(|&i| benches[i].0 == Variant::Raw)
                .unwrap_or(active[0]);
            let n = match config.fixed_n {
                Some(n) => n,
                None => calibrate(benches[calibrator].1.as_mut(), config.rep_ms, &mut op, 1)?,
            };
            let samples = measure_cells(config, &mut benches, &active, n, &mut op, 1)?;
            let mut line = format!("{:7} {:5} B {} fds n={n:6}:", shape.id(), size, nfds);
            for (&index, sample) in active.iter().zip(samples) {
                let variant = benches[index].0;
                let cell = Cell {
                    shape,
                    variant,
                    data: size,
                    nfds,
                    n,
                    ns: sample.ns,
                    typical: sample.typical,
                    allocs: sample.allocs,
                    // Thread shape: both ends run in this process, so every
                    // allocation of both messages of each round trip is
                    // counted. Process shape: only this end (one send and one
                    // receive per round trip, i.e. one message's worth).
                    messages: match shape {
                        Shape::Thread => 2 * n * config.reps as u64,
                        Shape::Process => n * config.reps as u64,
                    },
                };
                line += &format!(" {}={:.0}", variant.id(), report::median(&cell.ns));
                results.pingpong.push(cell);
            }
            eprintln!("{line}");
        }
    }
    stop_all(shape, "echo", benches, results)
}

fn run_throughput(
    config: &Config,
    shape: Shape,
    payload: &[u8],
    results: &mut Results,
) -> io::Result<()> {
    let mut benches = Vec::new();
    for &variant in &config.variants {
        benches.push((
            variant,
            start(variant, shape, Mode::Sink, &config.placement)?,
        ));
    }
    let active: Vec<usize> = (0..benches.len()).collect();
    let mut op = |bench: &mut dyn Bench, n: u64| bench.stream(payload, n).map(|d| (d, None));
    let calibrator = active
        .iter()
        .copied()
        .find(|&i| benches[i].0 == Variant::Raw)
        .unwrap_or(0);
    let n = match config.fixed_n {
        Some(n) => n.div_ceil(CREDIT_EVERY) * CREDIT_EVERY,
        None => calibrate(
            benches[calibrator].1.as_mut(),
            config.rep_ms,
            &mut op,
            CREDIT_EVERY,
        )?,
    };
    let samples = measure_cells(config, &mut benches, &active, n, &mut op, CREDIT_EVERY)?;
    let mut line = format!("{:7} stream 64 B n={n}:", shape.id());
    for (&index, sample) in active.iter().zip(samples) {
        let variant = benches[index].0;
        let cell = Cell {
            shape,
            variant,
            data: payload.len(),
            nfds: 0,
            n,
            ns: sample.ns,
            typical: sample.typical,
            allocs: sample.allocs,
            // Per data message; credits (one per CREDIT_EVERY) are included
            // in the count of allocations but not in the message count.
            messages: match shape {
                Shape::Thread => n * config.reps as u64,
                Shape::Process => n * config.reps as u64,
            },
        };
        line += &format!(" {}={:.0}ns", variant.id(), report::median(&cell.ns));
        results.throughput.push(cell);
    }
    eprintln!("{line}");
    stop_all(shape, "sink", benches, results)
}

fn stop_all(
    shape: Shape,
    mode: &'static str,
    benches: Vec<(Variant, Box<dyn Bench>)>,
    results: &mut Results,
) -> io::Result<()> {
    for (variant, mut bench) in benches {
        let stats = bench.stop()?;
        if shape == Shape::Process {
            results.peer_allocs.push(PeerAllocs {
                shape,
                mode,
                variant,
                messages: stats.messages,
                allocs: stats.allocs,
            });
        }
    }
    Ok(())
}
