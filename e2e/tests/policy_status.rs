//! FailoverPolicy `status` writing, end to end: real `xds-server` processes in Kubernetes mode
//! against the test API server (no Envoy: what the server publishes is read through its admin API).
//!
//! * Status writes are off the policy path: with the API server sitting on every status write, a new
//!   policy is still in force at once, and its status lands (by retrying) once the writes go through.
//! * Two replicas elect one status writer with a `coordination.k8s.io/v1` Lease: only the holder
//!   writes, and when it dies the other takes over within the lease duration.
//! * `observedGeneration` follows every spec edit, and `lastTransitionTime` moves only with the
//!   condition's status.
//!
//! The lease and timeout settings are passed as environment variables (`XDS_STATUS_*`), not flags, so
//! that the same tests can be run against a server built before these settings existed (it ignores
//! the variables) to see them fail there.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::apiserver::{ApiServer, KindInfo, StatusWrite, StatusWriteFault};
use e2e::k8s::{failover_policy, service, POLICY_API};
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;
use e2e::topology::{NAMESPACE, SERVICE};
use serde_json::{json, Value};

/// The status Lease's duration in these tests (`--status-lease-duration`).
const LEASE_DURATION: Duration = Duration::from_secs(3);
/// How long one status write may hang before it is retried (`--status-write-timeout`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A policy applied in the API server is in force within this (the source coalesces for 20 ms).
const PUBLISHED: Duration = Duration::from_secs(3);
const EVERY: Duration = Duration::from_millis(25);

struct World {
    api: ApiServer,
    dir: TempDir,
}

impl World {
    fn new() -> World {
        let api = ApiServer::start();
        api.register_kind(KindInfo::failover_policy());
        api.apply(service(None));
        World {
            api,
            dir: TempDir::new("policy-status"),
        }
    }

    /// A server whose API requests carry the bearer token `replica`, so its status writes are its own.
    fn server(&self, replica: &str) -> XdsServer {
        let kubeconfig: PathBuf = self.dir.join(&format!("kubeconfig-{replica}"));
        self.api.write_kubeconfig_with_token(&kubeconfig, replica);
        let mut args = ServerArgs::kubernetes(&kubeconfig);
        args.env = vec![
            (
                "XDS_STATUS_LEASE_DURATION".into(),
                format!("{}s", LEASE_DURATION.as_secs()),
            ),
            (
                "XDS_STATUS_WRITE_TIMEOUT".into(),
                format!("{}s", WRITE_TIMEOUT.as_secs()),
            ),
        ];
        XdsServer::start(args)
    }

    fn policy(&self, name: &str) -> Value {
        self.api
            .get(POLICY_API, "FailoverPolicy", Some(NAMESPACE), name)
            .unwrap_or_else(|| panic!("FailoverPolicy {name} is gone"))
    }

    /// Edits the spec as `kubectl edit` would: the status stays, the generation goes up.
    fn edit_spec(&self, name: &str, spec: Value) -> i64 {
        let mut obj = self.policy(name);
        obj["spec"] = spec;
        self.api.apply(obj)["metadata"]["generation"]
            .as_i64()
            .expect("a generation")
    }

    /// Waits until the policy's status has an `Accepted` condition with `status` for `generation`.
    fn wait_status(&self, name: &str, status: &str, generation: i64, timeout: Duration) -> Value {
        e2e::poll(timeout, EVERY, || {
            let obj = self.policy(name);
            let cond = accepted(&obj)?;
            (cond["status"] == status && obj["status"]["observedGeneration"] == generation)
                .then_some(cond)
        })
        .unwrap_or_else(|| {
            panic!(
                "FailoverPolicy {name}: no Accepted={status} for generation {generation} within {timeout:?}; object: {}",
                self.policy(name)
            )
        })
    }

    fn policy_writes(&self) -> Vec<StatusWrite> {
        self.api
            .status_writes()
            .into_iter()
            .filter(|w| w.plural == "failoverpolicies")
            .collect()
    }

    fn lease(&self) -> Option<Value> {
        self.api.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("xds-system"),
            "xds-server-status-writer",
        )
    }
}

fn accepted(obj: &Value) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Accepted")
        .cloned()
}

/// The panic threshold of the FailoverPolicy `echo` as the server has it in force, if it does.
fn panic_threshold_in_force(server: &XdsServer) -> Option<i64> {
    let policies = server.xdsctl_json(&["policies"]);
    let origin = format!("kubernetes:{NAMESPACE}/echo");
    policies["active"]
        .as_array()?
        .iter()
        .find(|p| p["origin"] == origin.as_str())?["panic_threshold"]
        .as_i64()
}

/// Waits until the server has published its first complete view (its admin API answers).
fn wait_published(server: &XdsServer) {
    e2e::poll(Duration::from_secs(30), Duration::from_millis(100), || {
        let out = std::process::Command::new(e2e::paths::xdsctl_bin())
            .args(["--admin-addr", &server.admin_addr().to_string(), "policies"])
            .output()
            .ok()?;
        out.status.success().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the server never published; log:\n{}",
            e2e::tail(&server.log(), 40)
        )
    });
}

#[test]
fn a_policy_is_in_force_at_once_while_status_writes_hang_and_its_status_lands_after() {
    let world = World::new();
    let server = world.server("replica-a");
    wait_published(&server);

    // The API server sits on every status write from now on.
    world
        .api
        .set_status_write_fault(Some(StatusWriteFault::Hang));
    let applied = Instant::now();
    world.api.apply(failover_policy(
        "echo",
        json!({"service": SERVICE, "panicThreshold": 25}),
    ));
    let in_force = e2e::poll(PUBLISHED, EVERY, || {
        (panic_threshold_in_force(&server) == Some(25)).then(|| applied.elapsed())
    });
    let in_force = in_force.unwrap_or_else(|| {
        panic!(
            "the policy was not in force {PUBLISHED:?} after it was applied, with status writes hanging \
             (policies: {}); log:\n{}",
            server.xdsctl_json(&["policies"]),
            e2e::tail(&server.log(), 40)
        )
    });
    println!(
        "policy in force {} ms after it was applied, status writes hanging",
        in_force.as_millis()
    );

    // Hanging writes time out and are retried.
    let retried = e2e::poll(WRITE_TIMEOUT * 3, EVERY, || {
        (world.policy_writes().len() >= 2).then_some(())
    });
    assert!(
        retried.is_some(),
        "a hung status write was not retried: {:?}",
        world.policy_writes()
    );
    assert_eq!(
        accepted(&world.policy("echo")),
        None,
        "no status while writes hang"
    );

    // Once writes go through again, the status lands.
    world.api.set_status_write_fault(None);
    let cleared = Instant::now();
    let cond = world.wait_status("echo", "True", 1, Duration::from_secs(20));
    println!(
        "status landed {} ms after the fault cleared, after {} attempts: {cond}",
        cleared.elapsed().as_millis(),
        world.policy_writes().len()
    );
    assert_eq!(cond["reason"], "Accepted");
}

#[test]
fn a_slow_api_server_delays_the_status_not_the_policy() {
    let world = World::new();
    let server = world.server("replica-a");
    wait_published(&server);
    world
        .api
        .set_status_write_fault(Some(StatusWriteFault::Delay(Duration::from_millis(1500))));
    // Three objects: written one after the other, 4.5 s of writes in all.
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        world.api.apply(failover_policy(
            name,
            json!({"service": format!("other-{i}")}),
        ));
    }
    // Written one by one with no status writes in the way, each policy's edit reaches the server
    // at once: here the service policy `echo`, applied after the three.
    let applied = Instant::now();
    world.api.apply(failover_policy(
        "echo",
        json!({"service": SERVICE, "panicThreshold": 30}),
    ));
    let in_force = e2e::poll(PUBLISHED, EVERY, || {
        (panic_threshold_in_force(&server) == Some(30)).then(|| applied.elapsed())
    })
    .unwrap_or_else(|| panic!("policy not in force while status writes were slow"));
    println!(
        "policy in force after {} ms with 1.5 s status writes",
        in_force.as_millis()
    );
    for name in ["a", "b", "c", "echo"] {
        world.wait_status(name, "True", 1, Duration::from_secs(20));
    }
}

#[test]
fn observed_generation_follows_every_edit_and_the_transition_time_only_status_changes() {
    let world = World::new();
    let _server = world.server("replica-a");
    world.api.apply(failover_policy(
        "echo",
        json!({"service": SERVICE, "panicThreshold": 10}),
    ));
    let first = world.wait_status("echo", "True", 1, Duration::from_secs(20));
    let since = first["lastTransitionTime"].clone();
    assert!(since.as_str().is_some_and(|t| t.ends_with('Z')), "{first}");

    // Accepted as before: the verdict is the same, the generation judged is new.
    std::thread::sleep(Duration::from_millis(1100));
    let generation = world.edit_spec("echo", json!({"service": SERVICE, "panicThreshold": 20}));
    assert_eq!(generation, 2);
    let second = world.wait_status("echo", "True", 2, Duration::from_secs(10));
    assert_eq!(second, first, "same condition, same lastTransitionTime");

    // Refused: the status changes, and so does the transition time.
    let generation = world.edit_spec("echo", json!({"service": SERVICE, "panicThreshold": 150}));
    let refused = world.wait_status("echo", "False", generation, Duration::from_secs(10));
    assert_eq!(refused["reason"], "Invalid");
    assert_ne!(refused["lastTransitionTime"], since, "{refused}");

    // Refused for another reason: a new message, the same transition time.
    std::thread::sleep(Duration::from_millis(1100));
    let generation = world.edit_spec(
        "echo",
        json!({"service": SERVICE, "panicThreshold": "high"}),
    );
    let again = world.wait_status("echo", "False", generation, Duration::from_secs(10));
    assert_ne!(again["message"], refused["message"], "{again}");
    assert_eq!(again["lastTransitionTime"], refused["lastTransitionTime"]);
}

#[test]
fn one_of_two_replicas_writes_status_and_the_other_takes_over_when_it_dies() {
    let world = World::new();
    let mut replicas = vec![
        ("replica-a", world.server("replica-a")),
        ("replica-b", world.server("replica-b")),
    ];
    for (_, server) in &replicas {
        wait_published(server);
    }
    // Several objects and edits: chances for a second writer to show itself.
    world.api.apply(failover_policy(
        "echo",
        json!({"service": SERVICE, "panicThreshold": 10}),
    ));
    world.api.apply(failover_policy(
        "broken",
        json!({"service": "other", "panicThreshold": 150}),
    ));
    world.wait_status("echo", "True", 1, Duration::from_secs(20));
    world.wait_status("broken", "False", 1, Duration::from_secs(20));
    let writers = || -> std::collections::BTreeSet<String> {
        world.policy_writes().into_iter().map(|w| w.token).collect()
    };
    assert_eq!(
        writers().len(),
        1,
        "one replica writes the first status: {:?}",
        world.policy_writes()
    );
    let generation = world.edit_spec("echo", json!({"service": SERVICE, "panicThreshold": 15}));
    world.wait_status("echo", "True", generation, Duration::from_secs(10));
    // Both replicas have the policy in force: each serves it, only one writes status.
    for (name, server) in &replicas {
        assert!(
            e2e::poll(PUBLISHED, EVERY, || (panic_threshold_in_force(server)
                == Some(15))
            .then_some(()))
            .is_some(),
            "{name} does not serve the edited policy"
        );
    }
    // Another lease duration of quiet: a second writer, if any, would have written by now.
    std::thread::sleep(LEASE_DURATION);
    let writers = writers();
    println!(
        "status writes before the kill: {:?}",
        world
            .policy_writes()
            .iter()
            .map(|w| (&w.token, &w.name))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        writers.len(),
        1,
        "exactly one replica writes status: {writers:?}"
    );
    let writer = writers.into_iter().next().unwrap();
    let lease = world.lease().expect("the status Lease exists");
    println!("lease before the kill: {}", lease["spec"]);
    let holder_before = lease["spec"]["holderIdentity"].clone();

    // Kill the writer (SIGKILL: no release); the other must take over.
    let writer_index = replicas.iter().position(|(n, _)| *n == writer).unwrap();
    let (_, mut dead) = replicas.remove(writer_index);
    let (survivor, _survivor_server) = &replicas[0];
    let writes_before = world.policy_writes().len();
    dead.kill();
    let killed = Instant::now();
    let generation = world.edit_spec("echo", json!({"service": SERVICE, "panicThreshold": 20}));
    let limit = LEASE_DURATION + Duration::from_secs(4);
    let takeover = e2e::poll(limit, EVERY, || {
        world.policy_writes()[writes_before..]
            .iter()
            .find(|w| w.token == *survivor)
            .map(|w| w.received.duration_since(killed))
    })
    .unwrap_or_else(|| {
        panic!(
            "{survivor} wrote no status within {limit:?} of the writer's death; lease: {:?}",
            world.lease()
        )
    });
    world.wait_status("echo", "True", generation, Duration::from_secs(5));
    let lease = world.lease().unwrap();
    println!(
        "{survivor} took over {} ms after {writer} was killed (lease duration {LEASE_DURATION:?}); lease: {}",
        takeover.as_millis(),
        lease["spec"]
    );
    assert_ne!(lease["spec"]["holderIdentity"], holder_before);
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{}", lease["spec"]);
    assert!(takeover <= limit, "{takeover:?}");
}
