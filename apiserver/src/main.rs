//! `apiserver`: serves the Kubernetes-style API over an etcd v3 store.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("apiserver: not built yet")
}
