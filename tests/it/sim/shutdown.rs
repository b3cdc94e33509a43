//! No task process outlives the simulator: not on SIGTERM, and not when it is killed outright
//! (the kernel's parent-death signal).

use std::time::{Duration, Instant};

use super::common::*;
use super::harness::{Sim, push_image, unique, wait_for};
use crate::support::unique_account;

/// A process is gone when /proc has no entry or only a zombie awaiting its new parent.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()) == Some("Z"),
    }
}

async fn sim_with_tasks() -> (Sim, Vec<u32>) {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let image = push_image(&unique("shutdown"), "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let td = register(&ecs, "svc", &image, &[("SIM_VERSION", "v1")], &[], false).await;
    ecs.create_service()
        .cluster("main")
        .service_name("svc")
        .task_definition(&td)
        .desired_count(2)
        .load_balancers(load_balancer(&account, "svc"))
        .send()
        .await
        .unwrap();
    ecs.run_task().cluster("main").task_definition(&td).count(1).send().await.unwrap();
    let pids = wait_for("three task processes", Duration::from_secs(15), || async {
        let p = sim.live_pids().await;
        (p.len() == 3).then_some(p)
    })
    .await;
    assert!(pids.iter().all(|p| !gone(*p)));
    (sim, pids)
}

fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !pids.iter().all(|p| gone(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive: Vec<&u32> = pids.iter().filter(|p| !gone(**p)).collect();
    assert!(alive.is_empty(), "task processes outlived ecs-sim: {alive:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_process_survives_sigterm_or_sigkill_of_the_sim() {
    // SIGTERM: the sim kills and reaps its tasks, then exits 0.
    let (mut sim, pids) = sim_with_tasks().await;
    let status = std::process::Command::new("kill").args(["-TERM", &sim.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let mut child = sim.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ecs-sim did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "{code:?}\n{}", sim.log_text());
    wait_gone(&pids);

    // SIGKILL: nothing of the sim runs, the kernel's parent-death signal ends the tasks.
    let (mut sim, pids) = sim_with_tasks().await;
    let mut child = sim.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    wait_gone(&pids);
}
