//! The real `kube` client of a test API server, for the modules that drive it directly (`kube` is a
//! dev-dependency of this crate, so this lives with the tests rather than in the harness library).

use e2e::apiserver::ApiServer;
use e2e::tmp::TempDir;
use kube::Client;

/// A kube client configured the way a binary's `--kubeconfig PATH` would be.
pub async fn client(server: &ApiServer) -> Client {
    Client::try_from(config(server).await).expect("client")
}

/// The client configuration a binary's `--kubeconfig PATH` would have.
pub async fn config(server: &ApiServer) -> kube::Config {
    let dir = TempDir::new("kubeconfig");
    let path = dir.join("kubeconfig");
    server.write_kubeconfig(&path);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    let options = kube::config::KubeConfigOptions {
        context: Some("test".into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("kubeconfig");
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        server.url()
    );
    config
}
