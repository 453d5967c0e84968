//! `chuyi-chaos [--short] [SCENARIO...]`: runs the fault scenarios (all by
//! default) and prints one line each, then `N passed, N failed`.
//!
//! `chuyi-chaos simulate [--seeds N] [--from S] [--rot]`: runs the
//! simulation of seeds S..S+N (0..100 by default), one line each, then the
//! same last line; `--seed S` reruns one; `--rot` adds bit flips on disks.

use std::process::ExitCode;
use std::time::Instant;

use chuyi_chaos::scenarios::{self, Intensity};
use chuyi_chaos::sim;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "simulate") {
        return simulate(&args[1..]);
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(scenarios(args)),
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after `flag` in `args`, if any.
fn flag(args: &[String], flag: &str) -> Option<u64> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn simulate(args: &[String]) -> ExitCode {
    let seeds = match flag(args, "--seed") {
        Some(seed) => seed..seed + 1,
        None => {
            let from = flag(args, "--from").unwrap_or(0);
            from..from + flag(args, "--seeds").unwrap_or(100)
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for seed in seeds {
        let options = sim::Options { rot: args.iter().any(|a| a == "--rot"), ..sim::Options::default() };
        match sim::run(seed, options) {
            Ok(outcome) if outcome.passed() => {
                passed += 1;
                println!("{}", outcome.line());
            }
            Ok(outcome) => {
                failed += 1;
                println!("{}", outcome.line());
                for v in outcome.violations.iter().take(10) {
                    println!("  {v}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("seed {seed}: FAIL ({e:#})");
            }
        }
    }
    finish(passed, failed)
}

fn finish(passed: u32, failed: u32) -> ExitCode {
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn scenarios(args: Vec<String>) -> ExitCode {
    let short = args.iter().any(|a| a == "--short");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let intensity = if short { Intensity::short() } else { Intensity::long() };
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios::all() {
        if !only.is_empty() && !only.iter().any(|o| o.as_str() == name) {
            continue;
        }
        let started = Instant::now();
        match scenario(intensity).await {
            Ok(detail) => {
                passed += 1;
                println!("{name}: PASS in {:.1} s ({detail})", started.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("{name}: FAIL in {:.1} s ({e:#})", started.elapsed().as_secs_f64());
            }
        }
    }
    finish(passed, failed)
}
