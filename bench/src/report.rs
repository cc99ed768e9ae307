//! Statistics, target checks, and the three outputs: markdown, JSON, SVG.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use plotters::prelude::*;
use serde::{Serialize, Serializer};

use crate::calls::{CallCell, CallPeerAllocs, CallVariant, Case};
use crate::harness::{Shape, Variant};
use crate::memory::{BinarySize, Memory, StackFigure};
use crate::{Cell, Config, PeerAllocs, Results};

pub struct Meta {
    pub started: String,
    pub placement: String,
    pub placement_id: &'static str,
    pub reps: usize,
    pub rep_ms: f64,
    pub command: String,
    pub load_start: String,
    pub load_end: String,
    pub wall: Duration,
    /// Part of `wall` spent building the echo binaries for their sizes.
    pub build: Duration,
}

// ---------------------------------------------------------------------------
// Statistics.

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Which per-repetition figure a statistic is taken over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Elapsed time of the repetition / operations: the headline figure.
    Mean,
    /// Median of the individually timed round trips of the repetition:
    /// robust against other tasks preempting a few round trips.
    Typical,
}

impl Metric {
    fn of(self, cell: &Cell) -> &[f64] {
        match self {
            Metric::Mean => &cell.ns,
            Metric::Typical if cell.typical.is_empty() => &cell.ns,
            Metric::Typical => &cell.typical,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Metric::Mean => "mean of each repetition",
            Metric::Typical => "median single round trip",
        }
    }
}

/// Ratio of `cell` to `floor`, paired by repetition (the two ran back to
/// back in the same repetition): the median of the per-repetition ratios.
fn paired_ratio_by(metric: Metric, cell: &Cell, floor: &Cell) -> f64 {
    let ratios: Vec<f64> = metric
        .of(cell)
        .iter()
        .zip(metric.of(floor))
        .map(|(a, b)| a / b)
        .collect();
    median(&ratios)
}

fn paired_ratio(cell: &Cell, floor: &Cell) -> f64 {
    paired_ratio_by(Metric::Mean, cell, floor)
}

fn find(cells: &[Cell], shape: Shape, variant: Variant, data: usize, nfds: usize) -> Option<&Cell> {
    cells
        .iter()
        .find(|c| c.shape == shape && c.variant == variant && c.data == data && c.nfds == nfds)
}

fn ratio_to_floor(cells: &[Cell], cell: &Cell) -> Option<f64> {
    ratio_to_floor_by(Metric::Mean, cells, cell)
}

fn ratio_to_floor_by(metric: Metric, cells: &[Cell], cell: &Cell) -> Option<f64> {
    find(
        cells,
        cell.shape,
        cell.variant.floor(),
        cell.data,
        cell.nfds,
    )
    .map(|f| paired_ratio_by(metric, cell, f))
}

fn allocs_per_msg(cell: &Cell) -> f64 {
    cell.allocs as f64 / cell.messages as f64
}

// ---------------------------------------------------------------------------
// Targets.

#[derive(Serialize)]
pub struct Target {
    #[serde(rename = "target")]
    pub name: String,
    pub met: bool,
    pub detail: String,
}

fn targets(results: &Results) -> Vec<Target> {
    let mut out = timing_targets(results, Metric::Mean);
    out.extend(timing_targets(results, Metric::Typical));
    if !results.pingpong.is_empty() || !results.throughput.is_empty() {
        out.push(alloc_target(results));
    }
    out
}

fn timing_targets(results: &Results, metric: Metric) -> Vec<Target> {
    let cells = &results.pingpong;
    let suffix = format!(" [{}]", metric.label());
    let mut out = Vec::new();
    let mut check_floor = |variant: Variant, name: &str| {
        let mut worst: Option<(f64, String)> = None;
        let mut misses = Vec::new();
        let mut any = false;
        for cell in cells.iter().filter(|c| c.variant == variant) {
            let Some(ratio) = ratio_to_floor_by(metric, cells, cell) else {
                continue;
            };
            any = true;
            let at = format!("{} {} B {} fds", cell.shape.id(), cell.data, cell.nfds);
            if ratio > 1.05 {
                misses.push(format!("{at}: {ratio:.3}"));
            }
            if worst.as_ref().is_none_or(|(w, _)| ratio > *w) {
                worst = Some((ratio, at));
            }
        }
        if any {
            let (w, at) = worst.unwrap();
            out.push(Target {
                name: format!("{name}{suffix}"),
                met: misses.is_empty(),
                detail: if misses.is_empty() {
                    format!("worst cell {at}: {w:.3}")
                } else {
                    format!("over 1.05 at {}", misses.join("; "))
                },
            });
        }
    };
    check_floor(
        Variant::Crate,
        "blocking `recv` within 1.05x of the raw blocking floor at every cell",
    );
    check_floor(
        Variant::CratePoll,
        "poll-driven `try_recv` within 1.05x of the raw floor under the same poll loop at every cell",
    );

    timing_alternatives(results, metric, &suffix, &mut out);
    out
}

fn alloc_target(results: &Results) -> Target {
    let cells = &results.pingpong;
    let mut allocating = Vec::new();
    let mut any = false;
    for cell in cells.iter().chain(&results.throughput) {
        if matches!(cell.variant, Variant::Crate | Variant::CratePoll) {
            any = true;
            if cell.allocs != 0 {
                allocating.push(format!(
                    "{} {} {} B {} fds: {:.4}",
                    cell.variant.id(),
                    cell.shape.id(),
                    cell.data,
                    cell.nfds,
                    allocs_per_msg(cell)
                ));
            }
        }
    }
    for peer in &results.peer_allocs {
        if matches!(peer.variant, Variant::Crate | Variant::CratePoll) && peer.allocs != 0 {
            allocating.push(format!(
                "{} peer process ({}): {} allocations",
                peer.variant.id(),
                peer.mode,
                peer.allocs
            ));
        }
    }
    Target {
        name: "0 allocations per message".into(),
        met: any && allocating.is_empty(),
        detail: if !any {
            "not measured".into()
        } else if allocating.is_empty() {
            "0 allocations counted in every timed repetition, both ends, and in every peer process"
                .into()
        } else {
            allocating.join("; ")
        },
    }
}

fn timing_alternatives(results: &Results, metric: Metric, suffix: &str, out: &mut Vec<Target>) {
    let cells = &results.pingpong;
    // libcamera.
    let mut misses = Vec::new();
    let mut worst: Option<(f64, String)> = None;
    let mut worst_fds: Option<(f64, String)> = None;
    for cell in cells
        .iter()
        .filter(|c| c.variant == Variant::Crate && c.data <= 4096)
    {
        let Some(lc) = find(cells, cell.shape, Variant::Libcamera, cell.data, cell.nfds) else {
            continue;
        };
        let speedup = paired_ratio_by(metric, lc, cell);
        let need = if cell.nfds == 0 { 1.7 } else { 1.0 };
        let at = format!("{} {} B {} fds", cell.shape.id(), cell.data, cell.nfds);
        if speedup < need {
            misses.push(format!("{at}: {speedup:.2}x (needs {need}x)"));
        }
        let slot = if cell.nfds == 0 {
            &mut worst
        } else {
            &mut worst_fds
        };
        if slot.as_ref().is_none_or(|(w, _)| speedup < *w) {
            *slot = Some((speedup, at));
        }
    }
    if worst.is_some() || worst_fds.is_some() {
        let mut detail = String::new();
        if let Some((w, at)) = &worst {
            let _ = write!(detail, "smallest speedup without fds {w:.2}x ({at})");
        }
        if let Some((w, at)) = &worst_fds {
            let _ = write!(detail, "; with fds {w:.2}x ({at})");
        }
        if !misses.is_empty() {
            let _ = write!(detail, "; missed at {}", misses.join("; "));
        }
        out.push(Target {
            name: format!("faster than the libcamera two-datagram design at every cell up to 4096 bytes, >= 1.7x without fds{suffix}"),
            met: misses.is_empty(),
            detail,
        });
    }

    // alternatives from the package registry.
    let mut misses = Vec::new();
    let mut closest: Option<(f64, String)> = None;
    for cell in cells.iter().filter(|c| c.variant == Variant::Crate) {
        for alt in [Variant::Nix, Variant::Sendfd, Variant::Uds] {
            let Some(other) = find(cells, cell.shape, alt, cell.data, cell.nfds) else {
                continue;
            };
            let speedup = paired_ratio_by(metric, other, cell);
            let at = format!(
                "{} {} {} B {} fds",
                alt.id(),
                cell.shape.id(),
                cell.data,
                cell.nfds
            );
            if speedup < 1.0 {
                misses.push(format!("{at}: {speedup:.3}x"));
            }
            if closest.as_ref().is_none_or(|(w, _)| speedup < *w) {
                closest = Some((speedup, at));
            }
        }
    }
    if let Some((w, at)) = closest {
        out.push(Target {
            name: format!(
                "no slower than any alternative from the package registry (nix, sendfd, uds) at any cell{suffix}"
            ),
            met: misses.is_empty(),
            detail: if misses.is_empty() {
                format!("closest: {at}, alternative/crate = {w:.3}x")
            } else {
                format!("slower at {}", misses.join("; "))
            },
        });
    }

    // The one-segment path against nix and uds (which send one segment
    // too) and against the bare floor.
    let mut misses = Vec::new();
    let mut closest: Option<(f64, String)> = None;
    let mut worst_bare: Option<(f64, String)> = None;
    let mut bare_misses = Vec::new();
    for cell in cells.iter().filter(|c| c.variant == Variant::CrateFrame) {
        let at = format!("{} {} B {} fds", cell.shape.id(), cell.data, cell.nfds);
        for alt in [Variant::Nix, Variant::Uds] {
            let Some(other) = find(cells, cell.shape, alt, cell.data, cell.nfds) else {
                continue;
            };
            if cell.data == 0 {
                continue;
            }
            let speedup = paired_ratio_by(metric, other, cell);
            if speedup < 1.0 {
                misses.push(format!("{} {at}: {speedup:.3}x", alt.id()));
            }
            if closest.as_ref().is_none_or(|(w, _)| speedup < *w) {
                closest = Some((speedup, format!("{} {at}", alt.id())));
            }
        }
        if let Some(bare) = find(cells, cell.shape, Variant::RawBare, cell.data, cell.nfds) {
            let ratio = paired_ratio_by(metric, cell, bare);
            if ratio > 1.02 {
                bare_misses.push(format!("{at}: {ratio:.3}x"));
            }
            if worst_bare.as_ref().is_none_or(|(w, _)| ratio > *w) {
                worst_bare = Some((ratio, at));
            }
        }
    }
    if let Some((w, at)) = closest {
        out.push(Target {
            name: format!(
                "crate-frame at or below nix and uds at every cell with data >= 1 B{suffix}"
            ),
            met: misses.is_empty(),
            detail: if misses.is_empty() {
                format!("closest: {at}, alternative/crate-frame = {w:.3}x")
            } else {
                format!("slower at {}", misses.join("; "))
            },
        });
    }
    if let Some((w, at)) = worst_bare {
        out.push(Target {
            name: format!("crate-frame <= 1.02x raw-bare at every cell{suffix}"),
            met: bare_misses.is_empty(),
            detail: if bare_misses.is_empty() {
                format!("worst: {at}, crate-frame/raw-bare = {w:.3}x")
            } else {
                format!("above at {}", bare_misses.join("; "))
            },
        });
    }
}

// ---------------------------------------------------------------------------
// Markdown.

fn group(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(ch);
    }
    out
}

fn allocs_text(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else {
        format!("{value:.2}")
    }
}

fn matrix(out: &mut String, config: &Config, results: &Results, shape: Shape, metric: Metric) {
    let cells = &results.pingpong;
    let variants: Vec<Variant> = config.variants.clone();
    let _ = write!(out, "| data B | fds |");
    for v in &variants {
        let _ = write!(out, " {} |", v.id());
    }
    out.push('\n');
    let _ = write!(out, "|---:|---:|");
    for _ in &variants {
        out.push_str("---:|");
    }
    out.push('\n');
    for &data in &config.sizes {
        for &nfds in &config.fds {
            let _ = write!(out, "| {data} | {nfds} |");
            for &v in &variants {
                match find(cells, shape, v, data, nfds) {
                    Some(cell) => {
                        let ratio = ratio_to_floor_by(metric, cells, cell).unwrap_or(f64::NAN);
                        let _ = write!(out, " {} ({ratio:.2}) |", group(median(metric.of(cell))));
                    }
                    None => out.push_str(" — |"),
                }
            }
            out.push('\n');
        }
    }
}

fn long_table(out: &mut String, config: &Config, results: &Results, shape: Shape) {
    let cells = &results.pingpong;
    out.push_str("| variant | data B | fds | ns/RT median | min | max | msgs/s | ratio to floor | floor | median single RT (ratio) | allocs/msg |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
    for &v in &config.variants {
        for cell in cells.iter().filter(|c| c.shape == shape && c.variant == v) {
            let m = median(&cell.ns);
            let ratio = ratio_to_floor(cells, cell).unwrap_or(f64::NAN);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {ratio:.3} | {} | {} ({:.3}) | {} |",
                v.id(),
                cell.data,
                cell.nfds,
                group(m),
                group(min(&cell.ns)),
                group(max(&cell.ns)),
                group(2.0e9 / m),
                v.floor().id(),
                group(median(&cell.typical)),
                ratio_to_floor_by(Metric::Typical, cells, cell).unwrap_or(f64::NAN),
                allocs_text(allocs_per_msg(cell)),
            );
        }
    }
}

fn peer_allocs_per_msg(
    results: &Results,
    shape: Shape,
    variant: Variant,
    mode: &str,
) -> Option<f64> {
    results
        .peer_allocs
        .iter()
        .find(|p| p.shape == shape && p.variant == variant && p.mode == mode && p.messages > 0)
        .map(|p| p.allocs as f64 / p.messages as f64)
}

fn throughput_table(out: &mut String, config: &Config, results: &Results) {
    out.push_str("| shape | variant | ns/msg median | min | max | msgs/s (median) | ratio to floor | allocs/msg |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for &shape in &config.shapes {
        for &v in &config.variants {
            let Some(cell) = results
                .throughput
                .iter()
                .find(|c| c.shape == shape && c.variant == v)
            else {
                continue;
            };
            let m = median(&cell.ns);
            let floor = results
                .throughput
                .iter()
                .find(|c| c.shape == shape && c.variant == v.floor());
            let ratio = floor.map_or(f64::NAN, |f| paired_ratio(cell, f));
            let mut allocs = allocs_per_msg(cell);
            if shape == Shape::Process {
                allocs += peer_allocs_per_msg(results, shape, v, "sink").unwrap_or(0.0);
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {ratio:.3} | {} |",
                shape.id(),
                v.id(),
                group(m),
                group(min(&cell.ns)),
                group(max(&cell.ns)),
                group(1.0e9 / m),
                allocs_text(allocs)
            );
        }
    }
}

fn alloc_summary(out: &mut String, config: &Config, results: &Results) {
    out.push_str("| variant |");
    for &nfds in &config.fds {
        let _ = write!(out, " {nfds} fds |");
    }
    out.push_str(" peer process (echo, whole life) |\n|---|");
    for _ in &config.fds {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    for &v in &config.variants {
        let _ = write!(out, "| {} |", v.id());
        for &nfds in &config.fds {
            let worst = results
                .pingpong
                .iter()
                .filter(|c| c.variant == v && c.nfds == nfds && c.shape == Shape::Thread)
                .map(allocs_per_msg)
                .fold(None, |acc: Option<f64>, x| {
                    Some(acc.map_or(x, |a| a.max(x)))
                });
            match worst {
                Some(x) => {
                    let _ = write!(out, " {} |", allocs_text(x));
                }
                None => out.push_str(" — |"),
            }
        }
        match peer_allocs_per_msg(results, Shape::Process, v, "echo") {
            Some(x) => {
                let _ = writeln!(out, " {} |", allocs_text(x));
            }
            None => out.push_str(" — |\n"),
        }
    }
}

fn memory_section(out: &mut String, memory: &Memory) {
    out.push_str("| figure | bytes |\n|---|---:|\n");
    let _ = writeln!(out, "| `size_of::<Channel<8>>()` | {} |", memory.channel8);
    let _ = writeln!(out, "| `size_of::<Channel<4>>()` | {} |", memory.channel4);
    let _ = writeln!(
        out,
        "| `size_of::<Payload<{{ HEADER_LEN + 4096 }}, 8>>()` | {} |",
        memory.payload_4096_8
    );
    let _ = writeln!(
        out,
        "| `size_of::<heapless::Vec<OwnedFd, 8>>()` (a caller's fd vector) | {} |",
        memory.heapless_fds8
    );
    match &memory.stack {
        Ok(figures) => {
            for f in figures {
                let _ = writeln!(out, "| stack: {} | {} |", f.what, f.bytes);
            }
        }
        Err(e) => {
            let _ = writeln!(out, "| stack | not measured: {e} |");
        }
    }
    let _ = writeln!(
        out,
        "\nStack bytes are measured, not estimated: the call runs on a fresh pthread whose {} KiB stack is a \
         buffer painted with a byte pattern (twice, with 0xA5 and 0x5A); after the join the deepest byte no \
         longer holding the pattern is found and its distance from the stack pointer read just before the call \
         is reported (so it includes the return address and every frame below; the kernel runs on its own stack). \
         The data buffer and fd vector are the caller's and are not on this stack.",
        memory.stack_size / 1024
    );
    match &memory.binaries {
        Ok(bins) => {
            out.push_str("\n| binary (release, default profile) | unstripped | stripped (`strip --strip-all`) |\n|---|---:|---:|\n");
            for b in bins {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    b.what,
                    group(b.unstripped as f64),
                    group(b.stripped as f64)
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "\nBinary sizes: {e}");
        }
    }
}

fn markdown(
    config: &Config,
    meta: &Meta,
    memory: &Memory,
    results: &Results,
    svg_name: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# ipc-unixsocket benchmark — placement: {}\n",
        meta.placement_id
    );
    let _ = writeln!(out, "- command: `{}`", meta.command);
    let _ = writeln!(out, "- placement: {}", meta.placement);
    let _ = writeln!(
        out,
        "- started: {} (UTC); wall time {:.1} s, of which {:.1} s building the echo binaries for their sizes",
        meta.started,
        meta.wall.as_secs_f64(),
        meta.build.as_secs_f64()
    );
    let _ = writeln!(out, "- machine: {}", machine());
    let _ = writeln!(
        out,
        "- load average at start: {}; at end: {}",
        meta.load_start, meta.load_end
    );
    let _ = writeln!(
        out,
        "- method: {} timed repetitions per cell of N operations (N calibrated per cell so one repetition takes ~{} ms), \
         after a warm-up; variants interleaved within each repetition, order rotated every repetition; \
         each repetition also preceded by a short per-variant warm-up. Reported: median, min and max over repetitions. \
         Ratio = median over repetitions of (variant / floor in the same repetition).",
        meta.reps, meta.rep_ms
    );
    out.push_str("\nVariants:\n\n");
    for v in &config.variants {
        let _ = writeln!(out, "- `{}`: {}", v.id(), v.description());
    }
    let _ = writeln!(
        out,
        "\n![round trip vs message size]({svg_name})\n\nThe same with the median single round trip: [{id}-median-rt.svg]({id}-median-rt.svg)\n",
        id = meta.placement_id
    );

    out.push_str("## Targets\n\n| target | met | detail |\n|---|---|---|\n");
    for t in targets(results) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            t.name,
            if t.met { "yes" } else { "**no**" },
            t.detail
        );
    }
    if meta.placement_id != "pinned" {
        out.push_str(
            "\nThe targets are defined for the pinned placement; here they are informational.\n",
        );
    }

    for &shape in &config.shapes {
        let _ = writeln!(
            out,
            "\n## Round trip, two {}: ns per round trip, median over repetitions (ratio to floor)\n",
            shape.plural()
        );
        matrix(&mut out, config, results, shape, Metric::Mean);
    }
    for &shape in &config.shapes {
        let _ = writeln!(
            out,
            "\n## Round trip, two {}: median single round trip, median over repetitions (ratio to floor)\n\n\
             Each round trip is also timed on its own (one `Instant::now()` per round trip, in every variant); \
             this is the median of those, so the few round trips during which another task held the CPU do not count.\n",
            shape.plural()
        );
        matrix(&mut out, config, results, shape, Metric::Typical);
    }
    out.push_str("\n## One-way throughput, 64-byte messages, no fds\n\n");
    let _ = writeln!(
        out,
        "At most {} messages in flight: the receiver returns one empty credit message per {} received.\n",
        crate::harness::WINDOW,
        crate::CREDIT_EVERY
    );
    throughput_table(&mut out, config, results);

    if !results.calls.is_empty() {
        calls_section(&mut out, config, results);
    }
    out.push_str("\n## Heap allocations per message\n\n");
    out.push_str(
        "Counted by a counting `#[global_allocator]` (every `alloc`, `alloc_zeroed`, `realloc`) during the timed \
         repetitions. Thread shape: both ends are in this process, so both the send and the receive of every \
         message are counted; the table shows the worst data size per fd count. Last column: the peer process's \
         own count over its whole echo loop (warm-up included), per message it received.\n\n",
    );
    alloc_summary(&mut out, config, results);

    out.push_str("\n## Memory\n\n");
    memory_section(&mut out, memory);

    for &shape in &config.shapes {
        let _ = writeln!(out, "\n## Full table, two {}\n", shape.plural());
        let _ = writeln!(
            out,
            "msgs/s counts both messages of a round trip (2e9 / ns per round trip). allocs/msg: {}.\n",
            match shape {
                Shape::Thread => "both ends",
                Shape::Process =>
                    "the measuring end's send + receive per round trip (= one message's send and receive)",
            }
        );
        long_table(&mut out, config, results, shape);
    }
    out
}

// ---------------------------------------------------------------------------
// JSON, through serde. The structs below are the schema of `<placement>.json`.

/// A figure in the JSON: rounded to 3 decimals, written as an integer when
/// it is whole, `null` when it is not finite (NaN: no floor to compare with).
#[derive(Clone, Copy)]
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if !x.is_finite() {
            return s.serialize_none();
        }
        let rounded = (x * 1000.0).round() / 1000.0;
        if rounded.fract() == 0.0 && rounded.abs() < 9.0e15 {
            s.serialize_i64(rounded as i64)
        } else {
            s.serialize_f64(rounded)
        }
    }
}

fn nums(values: &[f64]) -> Vec<Num> {
    values.iter().copied().map(Num).collect()
}

impl Serialize for Shape {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl Serialize for Variant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// A measurement or, when it could not be made, the reason as a string.
#[derive(Serialize)]
#[serde(untagged)]
enum OrReason<'a, T> {
    Value(T),
    Reason(&'a str),
}

impl<'a, T> OrReason<'a, T> {
    fn from(result: &'a Result<T, String>) -> OrReason<'a, &'a T> {
        match result {
            Ok(value) => OrReason::Value(value),
            Err(reason) => OrReason::Reason(reason),
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    meta: JsonMeta<'a>,
    variants: Vec<JsonVariant>,
    memory: JsonMemory<'a>,
    targets: Vec<Target>,
    pingpong: Vec<JsonCell>,
    throughput: Vec<JsonCell>,
    peer_processes: &'a [PeerAllocs],
    typed_calls: JsonCalls<'a>,
}

#[derive(Serialize)]
struct JsonMeta<'a> {
    placement: &'a str,
    placement_detail: &'a str,
    command: &'a str,
    started_utc: &'a str,
    machine: String,
    load_start: &'a str,
    load_end: &'a str,
    reps: usize,
    rep_ms: Num,
    wall_s: Num,
    window: u64,
    credit_every: u64,
    ns_unit: &'static str,
}

#[derive(Serialize)]
struct JsonVariant {
    id: Variant,
    description: &'static str,
}

#[derive(Serialize)]
struct JsonMemory<'a> {
    size_of_channel_8: usize,
    size_of_channel_4: usize,
    size_of_payload_4096_8: usize,
    size_of_heapless_vec_ownedfd_8: usize,
    stack_bytes: OrReason<'a, &'a Vec<StackFigure>>,
    binaries: OrReason<'a, &'a Vec<BinarySize>>,
}

#[derive(Serialize)]
struct JsonCell {
    shape: Shape,
    variant: Variant,
    data: usize,
    fds: usize,
    ops_per_rep: u64,
    ns: Vec<Num>,
    median_ns: Num,
    typical_ns: Vec<Num>,
    median_typical_ns: Option<Num>,
    ratio_typical: Option<Num>,
    min_ns: Num,
    max_ns: Num,
    msgs_per_s: Num,
    floor: Variant,
    ratio_to_floor: Option<Num>,
    allocs: u64,
    messages: u64,
    allocs_per_msg: Num,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    PingPong,
    Throughput,
}

fn json_cell(cell: &Cell, cells: &[Cell], kind: Kind) -> JsonCell {
    let m = median(&cell.ns);
    let (ratio, ratio_typical, per_s) = match kind {
        Kind::PingPong => (
            ratio_to_floor(cells, cell),
            ratio_to_floor_by(Metric::Typical, cells, cell),
            2.0e9 / m,
        ),
        Kind::Throughput => (
            cells
                .iter()
                .find(|c| c.shape == cell.shape && c.variant == cell.variant.floor())
                .map(|f| paired_ratio(cell, f)),
            None,
            1.0e9 / m,
        ),
    };
    JsonCell {
        shape: cell.shape,
        variant: cell.variant,
        data: cell.data,
        fds: cell.nfds,
        ops_per_rep: cell.n,
        ns: nums(&cell.ns),
        median_ns: Num(m),
        typical_ns: nums(&cell.typical),
        median_typical_ns: (!cell.typical.is_empty()).then(|| Num(median(&cell.typical))),
        ratio_typical: ratio_typical.map(Num),
        min_ns: Num(min(&cell.ns)),
        max_ns: Num(max(&cell.ns)),
        msgs_per_s: Num(per_s),
        floor: cell.variant.floor(),
        ratio_to_floor: ratio.map(Num),
        allocs: cell.allocs,
        messages: cell.messages,
        allocs_per_msg: Num(allocs_per_msg(cell)),
    }
}

/// serde_json's compact output, with a line break before each member of
/// the top-level object and each element of the arrays directly inside it
/// (one cell per line), so the file stays readable and diffs line by line.
struct LineFormatter {
    depth: usize,
    has_value: bool,
}

impl LineFormatter {
    fn open<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    /// `breaks`: whether this container's members went on their own lines.
    fn close<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        bracket: &[u8],
        breaks: bool,
    ) -> io::Result<()> {
        if breaks && self.has_value {
            w.write_all(b"\n")?;
        }
        self.depth -= 1;
        w.write_all(bracket)
    }

    fn member<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
        breaks: bool,
    ) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if breaks {
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The top-level object's members and the elements of the arrays
    /// directly inside it go on their own lines.
    fn object_breaks(&self) -> bool {
        self.depth == 1
    }

    fn array_breaks(&self) -> bool {
        self.depth == 2
    }
}

impl serde_json::ser::Formatter for LineFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        let breaks = self.array_breaks();
        self.close(w, b"]", breaks)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        let breaks = self.array_breaks();
        self.member(w, first, breaks)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        let breaks = self.object_breaks();
        self.close(w, b"}", breaks)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        let breaks = self.object_breaks();
        self.member(w, first, breaks)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

fn json(config: &Config, meta: &Meta, memory: &Memory, results: &Results) -> io::Result<Vec<u8>> {
    let report = JsonReport {
        meta: JsonMeta {
            placement: meta.placement_id,
            placement_detail: &meta.placement,
            command: &meta.command,
            started_utc: &meta.started,
            machine: machine(),
            load_start: &meta.load_start,
            load_end: &meta.load_end,
            reps: meta.reps,
            rep_ms: Num(meta.rep_ms),
            wall_s: Num(meta.wall.as_secs_f64()),
            window: crate::harness::WINDOW,
            credit_every: crate::CREDIT_EVERY,
            ns_unit: "ns per round trip (pingpong) or per message (throughput)",
        },
        variants: config
            .variants
            .iter()
            .map(|&v| JsonVariant {
                id: v,
                description: v.description(),
            })
            .collect(),
        memory: JsonMemory {
            size_of_channel_8: memory.channel8,
            size_of_channel_4: memory.channel4,
            size_of_payload_4096_8: memory.payload_4096_8,
            size_of_heapless_vec_ownedfd_8: memory.heapless_fds8,
            stack_bytes: OrReason::from(&memory.stack),
            binaries: OrReason::from(&memory.binaries),
        },
        targets: targets(results),
        pingpong: results
            .pingpong
            .iter()
            .map(|c| json_cell(c, &results.pingpong, Kind::PingPong))
            .collect(),
        throughput: results
            .throughput
            .iter()
            .map(|c| json_cell(c, &results.throughput, Kind::Throughput))
            .collect(),
        peer_processes: &results.peer_allocs,
        typed_calls: json_calls(results),
    };
    let mut out = Vec::new();
    let formatter = LineFormatter {
        depth: 0,
        has_value: false,
    };
    report.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, formatter,
    ))?;
    out.push(b'\n');
    Ok(out)
}

// ---------------------------------------------------------------------------
// SVG plot.

fn colour(v: Variant) -> RGBColor {
    match v {
        Variant::Crate => RGBColor(31, 119, 180),
        Variant::CratePoll => RGBColor(23, 190, 207),
        Variant::CrateFrame => RGBColor(227, 119, 194),
        Variant::Raw => RGBColor(0, 0, 0),
        Variant::RawPoll => RGBColor(127, 127, 127),
        Variant::RawBare => RGBColor(140, 86, 75),
        Variant::Libcamera => RGBColor(214, 39, 40),
        Variant::StdDatagram => RGBColor(188, 189, 34),
        Variant::Nix => RGBColor(255, 127, 14),
        Variant::Sendfd => RGBColor(148, 103, 189),
        Variant::Uds => RGBColor(44, 160, 44),
    }
}

fn plot(
    config: &Config,
    meta: &Meta,
    results: &Results,
    path: &PathBuf,
    metric: Metric,
) -> Result<(), String> {
    let cells = &results.pingpong;
    let cols = config.fds.len();
    let rows = config.shapes.len();
    let root =
        SVGBackend::new(path, (520 * cols as u32, 40 + 400 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (title, body) = root.split_vertically(40);
    title
        .draw_text(
            &format!(
                "ipc-unixsocket round trip vs data size — {} — {}, median of {} reps (lower is better)",
                meta.placement,
                match metric {
                    Metric::Mean => "time per round trip",
                    Metric::Typical => "median single round trip",
                },
                meta.reps
            ),
            &("sans-serif", 18).into_text_style(&title),
            (10, 12),
        )
        .map_err(|e| e.to_string())?;
    let panels = body.split_evenly((rows, cols));
    let sizes = &config.sizes;
    for (index, panel) in panels.iter().enumerate() {
        let shape = config.shapes[index / cols];
        let nfds = config.fds[index % cols];
        let mut series = Vec::new();
        for &v in &config.variants {
            let points: Vec<(f64, f64)> = sizes
                .iter()
                .enumerate()
                .filter_map(|(i, &data)| {
                    find(cells, shape, v, data, nfds)
                        .map(|c| (i as f64, median(metric.of(c)) / 1000.0))
                })
                .collect();
            if !points.is_empty() {
                series.push((v, points));
            }
        }
        let all: Vec<f64> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.1))
            .collect();
        if all.is_empty() {
            continue;
        }
        let hi = max(&all) * 1.08;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "two {}, {} fd{}",
                    shape.plural(),
                    nfds,
                    if nfds == 1 { "" } else { "s" }
                ),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.25f64..(sizes.len() as f64 - 0.75), 0f64..hi)
            .map_err(|e| e.to_string())?;
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < sizes.len() {
                sizes[i as usize].to_string()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(sizes.len() * 4 + 1)
            .x_label_formatter(&label)
            .x_desc("data bytes per message")
            .y_desc("µs per round trip")
            .y_labels(10)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(|e| e.to_string())?;
        for (v, points) in series {
            let c = colour(v);
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(v.id())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Writing and environment.

pub fn write_all(
    config: &Config,
    meta: &Meta,
    memory: &Memory,
    results: &Results,
) -> io::Result<Vec<PathBuf>> {
    let id = meta.placement_id;
    let md_path = config.out.join(format!("{id}.md"));
    let json_path = config.out.join(format!("{id}.json"));
    let svg_path = config.out.join(format!("{id}.svg"));
    let svg_typical_path = config.out.join(format!("{id}-median-rt.svg"));
    let svg_name = format!("{id}.svg");
    std::fs::write(&md_path, markdown(config, meta, memory, results, &svg_name))?;
    std::fs::write(&json_path, json(config, meta, memory, results)?)?;
    plot(config, meta, results, &svg_path, Metric::Mean).map_err(io::Error::other)?;
    plot(config, meta, results, &svg_typical_path, Metric::Typical).map_err(io::Error::other)?;
    for t in targets(results).into_iter().chain(calls_targets(results)) {
        eprintln!(
            "target {}: {} — {}",
            if t.met { "MET   " } else { "MISSED" },
            t.name,
            t.detail
        );
    }
    Ok(vec![md_path, json_path, svg_path, svg_typical_path])
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = rustix::system::uname();
    let release = kernel.release().to_string_lossy().into_owned();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    format!(
        "{cpu}, {} CPUs online, Linux {release}, {rustc}",
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
    )
}

pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------
// Typed calls.

/// Per-repetition ratios of `cell` to `base` (paired by repetition):
/// (median, min, max).
fn paired_spread(metric: Metric, cell: &CallCell, base: &CallCell) -> (f64, f64, f64) {
    let of = |c: &'_ CallCell| -> Vec<f64> {
        match metric {
            Metric::Mean => c.ns.clone(),
            Metric::Typical => c.typical.clone(),
        }
    };
    let ratios: Vec<f64> = of(cell).iter().zip(&of(base)).map(|(a, b)| a / b).collect();
    (median(&ratios), min(&ratios), max(&ratios))
}

fn find_call(
    cells: &[CallCell],
    shape: Shape,
    case: Case,
    variant: CallVariant,
) -> Option<&CallCell> {
    cells
        .iter()
        .find(|c| c.shape == shape && c.case == case && c.variant == variant)
}

fn calls_allocs_per_call(cell: &CallCell) -> f64 {
    cell.allocs as f64 / cell.calls as f64
}

/// The typed calls' targets, for one metric.
fn calls_timing_targets(results: &Results, metric: Metric) -> Vec<Target> {
    let cells = &results.calls;
    let suffix = format!(" [{}]", metric.label());
    let mut out = Vec::new();

    // Typed call against the channel round trip with the same record.
    let mut parts = Vec::new();
    let mut misses = Vec::new();
    for cell in cells.iter().filter(|c| c.variant == CallVariant::Call) {
        let Some(base) = find_call(cells, cell.shape, cell.case, CallVariant::Channel) else {
            continue;
        };
        let (r, lo, hi) = paired_spread(metric, cell, base);
        let at = format!("{} {}", cell.shape.id(), cell.case.describe());
        let mut part = format!("{at}: {r:.3} ({lo:.3}–{hi:.3})");
        if let Some(forever) = find_call(cells, cell.shape, cell.case, CallVariant::CallForever) {
            let (f, flo, fhi) = paired_spread(metric, forever, base);
            let _ = write!(part, ", without deadline {f:.3} ({flo:.3}–{fhi:.3})");
        }
        // What a deadline costs below the call layer, in the same run.
        for (variant, what) in [
            (
                CallVariant::ChannelPoll,
                "the channel with a poll-based deadline",
            ),
            (
                CallVariant::ChannelRcvtimeo,
                "the channel under SO_RCVTIMEO",
            ),
        ] {
            if let Some(floor) = find_call(cells, cell.shape, cell.case, variant) {
                let (f, flo, fhi) = paired_spread(metric, floor, base);
                let _ = write!(part, ", {what} {f:.3} ({flo:.3}–{fhi:.3})");
            }
        }
        if r > 1.05 {
            misses.push(at);
        }
        parts.push(part);
    }
    if !parts.is_empty() {
        out.push(Target {
            name: format!(
                "typed `call` with a deadline within 1.05x of the channel round trip carrying the same record and fds{suffix}"
            ),
            met: misses.is_empty(),
            detail: format!(
                "call/channel, median of per-repetition ratios (min–max): {}{}",
                parts.join("; "),
                if misses.is_empty() {
                    String::new()
                } else {
                    format!("; over 1.05 at {}", misses.join("; "))
                }
            ),
        });
    }

    // Typed call against the IPCPipe emulation at 64 B.
    let mut parts = Vec::new();
    let mut misses = Vec::new();
    for cell in cells
        .iter()
        .filter(|c| c.variant == CallVariant::Call && c.case == Case::Small)
    {
        let Some(pipe) = find_call(cells, cell.shape, cell.case, CallVariant::IpcPipe) else {
            continue;
        };
        let (s, lo, hi) = paired_spread(metric, pipe, cell);
        if s < 1.8 {
            misses.push(cell.shape.id());
        }
        parts.push(format!("{}: {s:.2}x ({lo:.2}–{hi:.2})", cell.shape.id()));
    }
    if !parts.is_empty() {
        out.push(Target {
            name: format!(
                "typed `call` >= 1.8x faster than the libcamera IPCPipe emulation at 64 B{suffix}"
            ),
            met: misses.is_empty(),
            detail: format!(
                "ipcpipe/call, median of per-repetition ratios (min–max): {}",
                parts.join("; ")
            ),
        });
    }
    out
}

fn calls_alloc_target(results: &Results) -> Option<Target> {
    let typed = |v: CallVariant| {
        matches!(
            v,
            CallVariant::Call
                | CallVariant::CallForever
                | CallVariant::FrameById
                | CallVariant::FrameFd
        )
    };
    let mut any = false;
    let mut allocating = Vec::new();
    for cell in results.calls.iter().filter(|c| typed(c.variant)) {
        any = true;
        if cell.allocs != 0 {
            allocating.push(format!(
                "{} {} {}: {:.4}",
                cell.variant.id(),
                cell.shape.id(),
                cell.case.id(),
                calls_allocs_per_call(cell)
            ));
        }
    }
    for peer in &results.calls_peers {
        if matches!(peer.instance, "call" | "call-no-deadline") && peer.allocs != 0 {
            allocating.push(format!(
                "{} peer process: {} allocations",
                peer.instance, peer.allocs
            ));
        }
    }
    any.then(|| Target {
        name: "typed calls: 0 allocations per call".into(),
        met: allocating.is_empty(),
        detail: if allocating.is_empty() {
            "0 allocations counted in every timed repetition (both ends with threads) and in every typed peer process".into()
        } else {
            allocating.join("; ")
        },
    })
}

fn calls_targets(results: &Results) -> Vec<Target> {
    let mut out = calls_timing_targets(results, Metric::Mean);
    out.extend(calls_timing_targets(results, Metric::Typical));
    out.extend(calls_alloc_target(results));
    out
}

fn calls_section(out: &mut String, config: &Config, results: &Results) {
    let cells = &results.calls;
    out.push_str("\n## Typed calls\n\n");
    out.push_str(
        "`calls::Caller::call` / `Responder::serve` round trips against the channel round trip \
         (`send_frame`/`recv_frame`) carrying the same record bytes (v1 header + 8-byte call header + \
         postcard body) and fds, echoed by the peer; libcamera's per-frame flow (buffers registered once \
         by `configure`, then named by id, against attaching the frame's fd to every call); and an emulation \
         of libcamera's `IPCPipeUnixSocket` with its per-message heap work. Body sizes are the postcard \
         bodies; the wire column is bytes per message (IPCPipe: header datagram + body datagram). \
         Ratios are to the case's baseline (first row), median over repetitions of the per-repetition \
         ratio, with its min–max. allocs/call: both ends with threads, the measuring end with processes \
         (the peer process's own count is listed below).\n\n",
    );
    for v in CallVariant::ALL {
        let _ = writeln!(out, "- `{}`: {}", v.id(), v.description());
    }
    out.push_str("\n| target | met | detail |\n|---|---|---|\n");
    for t in calls_targets(results) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            t.name,
            if t.met { "yes" } else { "**no**" },
            t.detail
        );
    }
    for &shape in &config.shapes {
        let _ = writeln!(out, "\n### Typed calls, two {}\n", shape.plural());
        out.push_str("| case | variant | wire B/msg | ns/RT median | min | max | ratio (min–max) | median single RT | ratio (min–max) | allocs/call |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for &case in &config.calls_cases {
            for cell in cells.iter().filter(|c| c.shape == shape && c.case == case) {
                let base = find_call(cells, shape, case, case.baseline());
                let ratio = |metric| {
                    base.map_or("—".to_string(), |b| {
                        let (r, lo, hi) = paired_spread(metric, cell, b);
                        format!("{r:.3} ({lo:.3}–{hi:.3})")
                    })
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    case.describe(),
                    cell.variant.id(),
                    cell.variant.wire_bytes(case),
                    group(median(&cell.ns)),
                    group(min(&cell.ns)),
                    group(max(&cell.ns)),
                    ratio(Metric::Mean),
                    group(median(&cell.typical)),
                    ratio(Metric::Typical),
                    allocs_text(calls_allocs_per_call(cell)),
                );
            }
        }
    }
    if !results.calls_peers.is_empty() {
        out.push_str("\nPeer processes (whole loop, warm-ups included):\n\n| peer | messages | allocations | per message |\n|---|---:|---:|---:|\n");
        for p in &results.calls_peers {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                p.instance,
                p.messages,
                p.allocs,
                allocs_text(if p.messages == 0 {
                    0.0
                } else {
                    p.allocs as f64 / p.messages as f64
                })
            );
        }
    }
}

#[derive(Serialize)]
struct JsonCalls<'a> {
    variants: Vec<JsonCallVariant>,
    targets: Vec<Target>,
    cells: Vec<JsonCallCell>,
    peer_processes: &'a [CallPeerAllocs],
}

#[derive(Serialize)]
struct JsonCallVariant {
    id: &'static str,
    description: &'static str,
}

#[derive(Serialize)]
struct JsonCallCell {
    shape: Shape,
    case: &'static str,
    case_detail: &'static str,
    variant: &'static str,
    body_bytes: usize,
    fds: usize,
    wire_bytes_per_msg: usize,
    ops_per_rep: u64,
    ns: Vec<Num>,
    median_ns: Num,
    min_ns: Num,
    max_ns: Num,
    typical_ns: Vec<Num>,
    median_typical_ns: Num,
    baseline: &'static str,
    ratio: Option<[Num; 3]>,
    ratio_typical: Option<[Num; 3]>,
    allocs: u64,
    calls: u64,
    allocs_per_call: Num,
}

fn json_calls(results: &Results) -> JsonCalls<'_> {
    let cells = &results.calls;
    let spread = |metric, cell: &CallCell| {
        find_call(cells, cell.shape, cell.case, cell.case.baseline()).map(|b| {
            let (r, lo, hi) = paired_spread(metric, cell, b);
            [Num(r), Num(lo), Num(hi)]
        })
    };
    JsonCalls {
        variants: CallVariant::ALL
            .iter()
            .map(|v| JsonCallVariant {
                id: v.id(),
                description: v.description(),
            })
            .collect(),
        targets: calls_targets(results),
        cells: cells
            .iter()
            .map(|c| JsonCallCell {
                shape: c.shape,
                case: c.case.id(),
                case_detail: c.case.describe(),
                variant: c.variant.id(),
                body_bytes: c.case.body(),
                fds: c.case.fds(),
                wire_bytes_per_msg: c.variant.wire_bytes(c.case),
                ops_per_rep: c.n,
                ns: nums(&c.ns),
                median_ns: Num(median(&c.ns)),
                min_ns: Num(min(&c.ns)),
                max_ns: Num(max(&c.ns)),
                typical_ns: nums(&c.typical),
                median_typical_ns: Num(median(&c.typical)),
                baseline: c.case.baseline().id(),
                ratio: spread(Metric::Mean, c),
                ratio_typical: spread(Metric::Typical, c),
                allocs: c.allocs,
                calls: c.calls,
                allocs_per_call: Num(calls_allocs_per_call(c)),
            })
            .collect(),
        peer_processes: &results.calls_peers,
    }
}
