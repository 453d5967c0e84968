//! `chuyi-chaos [--short] [SCENARIO...]`: runs the fault scenarios (all by
//! default) and prints one line each, then `N passed, N failed`.

use std::process::ExitCode;
use std::time::Instant;

use chuyi_chaos::scenarios::{self, Intensity};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
