//! mutex (tern's workload, see bench/run.sh): a root task spawns T tasks that
//! each increment one shared counter I times under one tokio::sync::Mutex
//! (lock, increment, unlock per iteration), then joins them.
//! Usage: mutex [--workers N] [T] [I]; one op = one lock + unlock.
//!
//! bench/run.sh builds it as src/bin/mutex.rs of the peer harness's Tokio
//! crate, so it shares that crate's helpers (arguments, runtime, RESULT).
use peers_tokio::*;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;

fn main() {
    let args = Args::parse();
    let t: u64 = args.get(0, 100);
    let iters: u64 = args.get(1, 10_000);
    let total = t
        .checked_mul(iters)
        .unwrap_or_else(|| usage("T*I does not fit in 64 bits"));
    let rt = runtime(args.workers);
    let counter = Arc::new(Mutex::new(0u64));
    let shared = counter.clone();
    let elapsed = rt.block_on(async move {
        let start = Instant::now();
        tokio::spawn(async move {
            let tasks: Vec<_> = (0..t)
                .map(|_| {
                    let c = shared.clone();
                    tokio::spawn(async move {
                        for _ in 0..iters {
                            *c.lock().await += 1;
                        }
                    })
                })
                .collect();
            for h in tasks {
                h.await.unwrap();
            }
        })
        .await
        .unwrap();
        start.elapsed()
    });
    let end = *counter.try_lock().expect("the mutex is free once every task is joined");
    check(end == total, "counter == T*I (no increment lost)");
    result("mutex", total, elapsed, "");
}
