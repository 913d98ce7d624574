//! The workload: register clients (`kv.rs`), watchers (`watch.rs`) and lease clients
//! (`lease.rs`), each a task driven by its own seeded RNG and recording what it saw.

pub mod kv;
pub mod lease;
pub mod watch;

use etcd_client::Client;

use crate::cluster::connect;

/// One lazily made client per member endpoint; a client is per member (not balanced)
/// so that each operation goes where the workload sent it.
pub struct Endpoints {
    urls: Vec<String>,
    clients: Vec<Option<Client>>,
}

impl Endpoints {
    pub fn new(urls: Vec<String>) -> Endpoints {
        let clients = urls.iter().map(|_| None).collect();
        Endpoints { urls, clients }
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    pub async fn client(&mut self, member: usize) -> anyhow::Result<Client> {
        if let Some(c) = &self.clients[member] {
            return Ok(c.clone());
        }
        let c = connect(&self.urls[member]).await?;
        self.clients[member] = Some(c.clone());
        Ok(c)
    }
}
