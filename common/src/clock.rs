//! Time, read through one seam, so a simulation can drive it.
//!
//! Protocol code (leases, fences, deadlines, liveness, penalties, the
//! times stamped into metadata commands) asks this module, never
//! `std::time` directly:
//!
//! - [`now`] is monotonic time: tokio's clock, which is the kernel's in a
//!   normal runtime and simulated time in a paused one (`tokio::time::pause`
//!   in tests, every host of a turmoil simulation in `chaos/src/sim`).
//! - [`wall`] and [`unix_ms`] are calendar time: the kernel's, or inside a
//!   simulation the simulation's epoch plus its elapsed virtual time, so the
//!   milliseconds a lease or an object carries move with the simulated
//!   clock instead of the machine's.
//!
//! Names made unique by a timestamp (snapshot files) are not time and may
//! read the kernel's clock directly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// Monotonic now.
pub fn now() -> Instant {
    Instant::now()
}

/// Calendar now.
pub fn wall() -> SystemTime {
    match turmoil::since_epoch() {
        Some(since) => UNIX_EPOCH + since,
        None => SystemTime::now(),
    }
}

/// Calendar now in milliseconds since the Unix epoch (0 for a clock set
/// before 1970).
pub fn unix_ms() -> u64 {
    wall().duration_since(UNIX_EPOCH).map_or(0, duration_ms)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_time_is_the_kernels_outside_a_simulation() {
        let kernel = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
        assert!(unix_ms().abs_diff(kernel) < 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn monotonic_time_follows_a_paused_runtime() {
        let before = now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(now() - before >= Duration::from_secs(3600));
    }

    #[test]
    fn calendar_time_follows_a_simulation() {
        let mut sim = turmoil::Builder::new().epoch(UNIX_EPOCH + Duration::from_secs(1_000)).build();
        sim.client("probe", async {
            let first = unix_ms();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let later = unix_ms();
            assert!((1_000_000..1_001_000).contains(&first), "first {first}");
            assert!(later - first >= 5_000, "{first} then {later}");
            Ok(())
        });
        sim.run().expect("simulation");
    }
}
