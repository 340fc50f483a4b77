//! What every comparison bench in this folder shares: pinning to one core, timing a
//! closure, and timing a command-line program, so each bench holds only its own
//! operations and tables and all of them measure the same way.

// Each bench uses the part it needs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::process::Command;
use std::time::Instant;

/// Pins this process to CPU 0 (children inherit it); false when the kernel refuses.
pub fn pin_to_cpu0() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Best of three mean times of `f`, ms, each over a third of `seconds` (after one
/// warm-up call).
pub fn time_ms(seconds: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut n = 0u32;
        while n == 0 || start.elapsed().as_secs_f64() < seconds / 3.0 {
            f();
            n += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1000.0 / f64::from(n));
    }
    best
}

/// Best wall time of five runs of `program args…` on CPU 0 with `VIPS_CONCURRENCY=1`,
/// ms; `None` when it cannot start or fails.
pub fn program_best_ms(program: &str, args: &[String]) -> Option<f64> {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let status = Command::new("taskset")
            .args(["-c", "0", program])
            .args(args)
            .env("VIPS_CONCURRENCY", "1")
            .status()
            .ok()?;
        if !status.success() {
            eprintln!("{program} {args:?} failed: {status}");
            return None;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1000.0);
    }
    Some(best)
}

/// The python side's timing, the same rule as [`time_ms`]: `bench(f)` is the best of three
/// mean times of `f`, ms, each over a third of the global `secs` (after one warm-up call).
/// Prepended to each bench's python script (`python_script`).
const PY_BENCH: &str = r#"
import time
def bench(f):
    f()
    best = 1e9
    for _ in range(3):
        n = 0; t0 = time.perf_counter()
        while True:
            f(); n += 1
            el = time.perf_counter() - t0
            if el > secs / 3: break
        best = min(best, el / n)
    return best * 1000
"#;

/// A bench's python script with [`PY_BENCH`] in front of it.
fn python_script(body: &str) -> String {
    format!("{PY_BENCH}{body}")
}

/// Runs `python` (a program name or path) on `script` (with [`PY_BENCH`] in front) and
/// `args`, on CPU 0 with `VIPS_CONCURRENCY=1`; its standard output, or `None` after a
/// `SKIP <side>: ...` line naming its last error when it cannot start or fails.
pub fn run_python<A: AsRef<OsStr>>(
    python: &str,
    script: &str,
    args: impl IntoIterator<Item = A>,
    side: &str,
) -> Option<String> {
    let out = Command::new("taskset")
        .args(["-c", "0", python, "-c", &python_script(script)])
        .args(args)
        .env("VIPS_CONCURRENCY", "1")
        .output();
    match out {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprintln!(
                "SKIP {side}: {python} failed: {}",
                stderr.lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP {side}: {python} did not start: {e}");
            None
        }
    }
}

/// The flat JSON object of name → number a python side prints (`{"fit": 1.2, ...}`): flat,
/// so a split is enough; anything else is dropped.
pub fn flat_json(text: &str) -> HashMap<String, f64> {
    text.trim()
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((
                k.trim().trim_matches('"').to_owned(),
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}
