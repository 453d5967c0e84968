//! The progress bar of the long chunk-by-chunk commands (`trash purge`,
//! `snapshot rollback`, `volume flatten`): chunks done of all, percent,
//! rate and ETA; hidden under `--json`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar labelled `what` ("rolling back"), ticking while it waits.
pub fn chunks(what: &str, json: bool) -> ProgressBar {
    counting(what, "chunks", json)
}

/// A bar labelled `what` counting `unit`s ("spans"), with a message
/// (bytes and rate, `chuyi backup`), ticking while it waits.
pub fn counting(what: &str, unit: &str, json: bool) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let template = format!("{what} {{bar:40}} {{pos}}/{{len}} {unit} {{percent}}% {{msg}} {{per_sec}} eta {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    if json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// What the client's `progress(done, total)` callbacks call.
pub fn report(bar: &ProgressBar) -> impl Fn(u64, u64) + Sync + '_ {
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }
}
