use super::*;
use std::collections::VecDeque;
use std::sync::Mutex;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Answers from a script, one per resolution; the last one forever after.
struct Scripted {
    answers: Mutex<VecDeque<std::io::Result<Vec<IpAddr>>>>,
    asked: Mutex<u32>,
}

impl Scripted {
    fn new(answers: Vec<std::io::Result<Vec<IpAddr>>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into()),
            asked: Mutex::new(0),
        })
    }
}

impl Resolver for Scripted {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        _port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        *self.asked.lock().unwrap() += 1;
        let mut answers = self.answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            match answers.front().unwrap() {
                Ok(a) => Ok(a.clone()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            }
        };
        Box::pin(async move { answer })
    }
}

fn failure() -> std::io::Result<Vec<IpAddr>> {
    Err(std::io::Error::other("no such host"))
}

#[test]
fn a_failed_or_empty_resolution_keeps_the_last_addresses_and_a_good_one_replaces_them() {
    let old = NetworkGateway::new(ip("192.0.2.1"), 15443);
    assert_eq!(after_resolution(None, &failure(), 15443), None);
    assert_eq!(
        after_resolution(Some(&old), &failure(), 15443),
        Some(old.clone())
    );
    assert_eq!(
        after_resolution(Some(&old), &Ok(vec![]), 15443),
        Some(old.clone())
    );
    assert_eq!(
        after_resolution(
            Some(&old),
            &Ok(vec![ip("192.0.2.9"), ip("192.0.2.3"), ip("192.0.2.9")]),
            15443
        ),
        Some(NetworkGateway {
            addresses: vec![ip("192.0.2.3"), ip("192.0.2.9")],
            port: 15443
        })
    );
}

#[test]
fn gateway_specs_come_from_the_clusters_one_per_network() {
    let clusters: Vec<ClusterSpec> = [
        "east=,network=n1,gateway=gw.east.example:15443",
        "east2=,network=n1,gateway=gw.east.example:15443",
        "west=,network=n2,gateway=192.0.2.7:15443",
        "local=",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let specs = specs(&clusters).unwrap();
    assert_eq!(
        specs,
        [
            GatewaySpec {
                network: "n1".into(),
                host: "gw.east.example".into(),
                port: 15443
            },
            GatewaySpec {
                network: "n2".into(),
                host: "192.0.2.7".into(),
                port: 15443
            },
        ]
    );
    assert_eq!(specs[0].literal(), None);
    assert_eq!(
        specs[1].literal(),
        Some(NetworkGateway::new(ip("192.0.2.7"), 15443))
    );
}

/// A host name that does not resolve at first: no gateway (never a startup failure), retried after
/// 1 s, then 2 s; once it resolves, every address; re-resolved every refresh period, a new answer
/// replacing the old; a later failure keeps the last addresses. IP addresses need no resolver.
#[tokio::test(start_paused = true)]
async fn a_gateway_host_name_that_fails_then_resolves_is_retried_and_kept_resolved() {
    let resolver = Scripted::new(vec![
        failure(),
        failure(),
        Ok(vec![ip("192.0.2.2"), ip("192.0.2.1")]),
        Ok(vec![ip("192.0.2.3")]),
        failure(),
    ]);
    let refresh = Duration::from_secs(30);
    let specs = vec![
        GatewaySpec {
            network: "n1".into(),
            host: "gw.example".into(),
            port: 15443,
        },
        GatewaySpec {
            network: "n2".into(),
            host: "192.0.2.7".into(),
            port: 15443,
        },
    ];
    let mut rx = keep_resolved(specs, resolver.clone(), refresh);
    let n2 = Some(NetworkGateway::new(ip("192.0.2.7"), 15443));
    assert_eq!(rx.borrow().get("n2").cloned(), n2, "an IP address at once");
    let n1 = |rx: &watch::Receiver<Gateways>| rx.borrow().get("n1").cloned();

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(n1(&rx), None, "not resolved: no gateway");
    assert_eq!(*resolver.asked.lock().unwrap(), 1);
    let started = tokio::time::Instant::now();
    rx.changed().await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(2500),
        "retried after 1 s, then 2 s"
    );
    assert_eq!(
        n1(&rx),
        NetworkGateway::at([ip("192.0.2.1"), ip("192.0.2.2")], 15443),
        "every address"
    );
    rx.changed().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(2500) + refresh);
    assert_eq!(n1(&rx), Some(NetworkGateway::new(ip("192.0.2.3"), 15443)));
    tokio::time::sleep(refresh * 3).await;
    assert_eq!(
        n1(&rx),
        Some(NetworkGateway::new(ip("192.0.2.3"), 15443)),
        "failures keep the last addresses"
    );
    assert!(*resolver.asked.lock().unwrap() >= 6, "retried meanwhile");
    assert_eq!(rx.borrow().get("n2").cloned(), n2);
}

#[tokio::test]
async fn the_system_resolver_resolves_localhost() {
    let addresses = SystemResolver.resolve("localhost", 15443).await.unwrap();
    assert!(addresses.iter().any(|a| a.is_loopback()), "{addresses:?}");
}
