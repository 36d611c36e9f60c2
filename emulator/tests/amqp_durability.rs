//! SIGKILL under concurrent AMQP senders and peek-lock receivers (the npm SDK, driven by
//! `integration/compat/amqp-kill.js`), ten cycles: every send the SDK saw accepted is there
//! after a restart (unless a complete of it was in flight at the kill), and nothing whose
//! complete the SDK saw settled comes back.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{Process, kill_once};
use common::*;
use tokio::io::AsyncBufReadExt;

const CYCLES: usize = 10;
/// Accepted sends to wait for before each kill.
const SENDS_BEFORE_KILL: usize = 200;
/// Receivers in the driver: at most one complete each can be cut short by a kill.
const RECEIVERS: usize = 2;

#[derive(Default, Debug)]
struct Ledger {
    sent: HashSet<String>,
    /// Completes started, settled or not: one cut short may have taken effect.
    completing: HashSet<String>,
    completed: HashSet<String>,
}

impl Ledger {
    fn record(&mut self, line: &str) {
        let Some((what, id)) = line.split_once(' ') else {
            return;
        };
        let set = match what {
            "sent" => &mut self.sent,
            "completing" => &mut self.completing,
            "completed" => &mut self.completed,
            _ => return,
        };
        set.insert(id.to_string());
    }
}

#[tokio::test]
async fn sigkill_loses_no_accepted_send_and_returns_no_settled_complete() {
    testkit::ensure_compat_packages();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--data-dir", "data", "--index-window", "16"];
    let mut process = Process::start(dir.path(), &args).await;
    let c = Client::new(process.addr, KEY_NAME, KEY);
    let lock = queue("<LockDuration>PT5M</LockDuration>");
    assert_eq!(c.put("/k", lock).await.status, 201);
    for cycle in 0..CYCLES {
        let amqp = process.amqp_addr.expect("an AMQP address").to_string();
        let mut driver = tokio::process::Command::new("node")
            .arg("amqp-kill.js")
            .current_dir(testkit::compat_dir())
            .env("EMULATOR_AMQP", amqp)
            .env("CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed (Node.js 20+)");
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut lines = tokio::io::BufReader::new(driver.stdout.take().unwrap()).lines();
        let reading = {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    ledger.lock().unwrap().record(&line);
                }
            })
        };
        kill_once(process, SENDS_BEFORE_KILL, || {
            ledger.lock().unwrap().sent.len()
        })
        .await;
        // The driver's workers stop at their first error; it exits on its own.
        let exited = tokio::time::timeout(Duration::from_secs(120), driver.wait()).await;
        assert!(exited.is_ok(), "the driver exits once the emulator is gone");
        reading.await.unwrap();

        process = Process::start(dir.path(), &args).await;
        let c = Client::new(process.addr, KEY_NAME, KEY);
        let mut present = HashSet::new();
        for r in c.drain("k").await {
            let id = r.broker()["MessageId"].as_str().unwrap().to_string();
            assert!(
                present.insert(id.clone()),
                "{id} delivered twice after restart"
            );
        }
        let ledger = ledger.lock().unwrap();
        let lost: Vec<_> = ledger
            .sent
            .iter()
            .filter(|id| !ledger.completing.contains(*id) && !present.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} accepted sends lost, e.g. {:?}",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        let unanswered = ledger
            .completing
            .iter()
            .filter(|id| !ledger.completed.contains(*id) && !present.contains(*id))
            .count();
        assert!(
            unanswered <= RECEIVERS,
            "cycle {cycle}: {unanswered} messages gone without a settled complete"
        );
        let resurrected: Vec<_> = ledger.completed.intersection(&present).collect();
        assert!(
            resurrected.is_empty(),
            "cycle {cycle}: settled completes came back: {resurrected:?}"
        );
        println!(
            "cycle {cycle}: {} sends accepted, {} completes settled, {} back after SIGKILL, \
             {unanswered} completes cut short",
            ledger.sent.len(),
            ledger.completed.len(),
            present.len()
        );
    }
    assert_eq!(process.terminate().await, Ok(Some(0)));
}
