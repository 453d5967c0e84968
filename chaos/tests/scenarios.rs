//! Each chaos scenario in its short form, against real processes: part of
//! `make test`. `make chaos` runs the long forms.

use chuyi_chaos::scenarios::{self, Intensity};

async fn run(name: &str) {
    let (_, scenario) = scenarios::all().into_iter().find(|(n, _)| *n == name).expect("scenario exists");
    match scenario(Intensity::short()).await {
        Ok(detail) => println!("{name}: {detail}"),
        Err(e) => panic!("{name} failed: {e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_kill() {
    run("node-kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_leader_kill() {
    run("meta-leader-kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_freeze() {
    run("node-freeze").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bitflip() {
    run("bitflip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_full() {
    run("disk-full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn net_cut() {
    run("net-cut").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frontend_freeze() {
    run("frontend-freeze").await;
}
