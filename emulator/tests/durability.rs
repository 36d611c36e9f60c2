//! SIGKILL during concurrent sends and receives: every send answered 201 is there after a
//! restart (unless a complete of it was in flight at the kill), and nothing whose complete
//! was answered 200 comes back.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::process::{Process, kill_once};
use common::*;

/// Kill cycles in one run.
const CYCLES: usize = 3;
/// Acknowledged sends to wait for before each kill.
const SENDS_BEFORE_KILL: usize = 300;
const SENDERS: usize = 8;
const RECEIVERS: usize = 2;
/// Bounds each worker's loop whatever happens.
const MAX_PER_WORKER: usize = 2_000;

#[derive(Default)]
struct Ledger {
    sent: HashSet<String>,
    /// Completes sent, answered or not: one cut short by the kill may have taken effect.
    completing: HashSet<String>,
    completed: HashSet<String>,
}

#[tokio::test]
async fn sigkill_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // A small window: most deliveries go cold, and every restart files them as ranges.
    let args = ["--data-dir", "data", "--index-window", "16"];
    let p = Process::start(dir.path(), &args).await;
    let c = Client::new(p.addr, KEY_NAME, KEY);
    assert_eq!(
        c.put("/k", queue("<LockDuration>PT5M</LockDuration>"))
            .await
            .status,
        201
    );
    let mut p = Some(p);
    for cycle in 0..CYCLES {
        let process = p.take().unwrap();
        let c = Client::new(process.addr, KEY_NAME, KEY);
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut workers = Vec::new();
        for s in 0..SENDERS {
            let (c, ledger) = (c.clone(), ledger.clone());
            workers.push(tokio::spawn(async move {
                for j in 0..MAX_PER_WORKER {
                    let body = format!("c{cycle}-s{s}-{j}");
                    let url = format!("http://{}/k/messages", c.addr);
                    match reqwest::Client::new()
                        .post(url)
                        .header("authorization", c.token())
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 201 => {
                            ledger.lock().unwrap().sent.insert(body);
                        }
                        _ => return,
                    }
                }
            }));
        }
        for _ in 0..RECEIVERS {
            let (c, ledger) = (c.clone(), ledger.clone());
            workers.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                for _ in 0..MAX_PER_WORKER {
                    let head = format!("http://{}/k/messages/head?timeout=1", c.addr);
                    let Ok(r) = http
                        .post(head)
                        .header("authorization", c.token())
                        .header("content-length", "0")
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status() != 201 {
                        continue;
                    }
                    let location = r.headers()["location"].to_str().unwrap().to_string();
                    let Ok(body) = r.text().await else { return };
                    ledger.lock().unwrap().completing.insert(body.clone());
                    match http
                        .delete(location)
                        .header("authorization", c.token())
                        .header("content-length", "0")
                        .send()
                        .await
                    {
                        Ok(done) if done.status() == 200 => {
                            ledger.lock().unwrap().completed.insert(body);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }));
        }
        // Enough acknowledged sends, then kill -9.
        kill_once(process, SENDS_BEFORE_KILL, || {
            ledger.lock().unwrap().sent.len()
        })
        .await;
        for w in workers {
            w.await.unwrap();
        }

        let restarted = Process::start(dir.path(), &args).await;
        let c = Client::new(restarted.addr, KEY_NAME, KEY);
        let mut present = HashSet::new();
        for r in c.drain("k").await {
            assert!(
                present.insert(r.body.clone()),
                "{} delivered twice after restart",
                r.body
            );
        }
        let ledger = ledger.lock().unwrap();
        let lost: Vec<_> = ledger
            .sent
            .iter()
            .filter(|b| !ledger.completing.contains(*b) && !present.contains(*b))
            .collect();
        // Only a complete in flight at the kill may have removed a message unanswered.
        let unanswered = ledger
            .sent
            .iter()
            .filter(|b| {
                ledger.completing.contains(*b)
                    && !ledger.completed.contains(*b)
                    && !present.contains(*b)
            })
            .count();
        assert!(
            unanswered <= RECEIVERS,
            "cycle {cycle}: {unanswered} messages gone without an answered complete"
        );
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} acknowledged sends lost, e.g. {:?}",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        let resurrected: Vec<_> = ledger.completed.intersection(&present).collect();
        assert!(
            resurrected.is_empty(),
            "cycle {cycle}: completed messages came back: {resurrected:?}"
        );
        println!(
            "cycle {cycle}: {} sends acknowledged, {} completed, {} back after SIGKILL, {unanswered} completes cut short",
            ledger.sent.len(),
            ledger.completed.len(),
            present.len()
        );
        p = Some(restarted);
    }
    assert_eq!(p.unwrap().terminate().await, Ok(Some(0)));
}
