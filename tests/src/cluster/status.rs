//! What `cluster status` reports and what `cluster up` waits for: store members and the
//! leader (etcd's Maintenance.Status over TLS), apiservers (a linearizable read through
//! each one), the holders of the scheduler and controller-manager Leases, and nodes.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{Layout, MEMBERS};

#[derive(Clone, Debug)]
pub struct StoreMember {
    pub name: String,
    pub endpoint: String,
    /// `None`: did not answer.
    pub member_id: Option<u64>,
    pub leader_id: Option<u64>,
    pub raft_term: Option<u64>,
    pub error: Option<String>,
}

/// Status of each store member, asked one by one (a down member shows its error).
pub async fn store_members(layout: &Layout) -> Vec<StoreMember> {
    let tls = layout.store_tls();
    let mut out = Vec::new();
    for (i, endpoint) in layout.store_endpoints().into_iter().enumerate() {
        let mut m = StoreMember {
            name: format!("store-{}", i + 1),
            endpoint: endpoint.clone(),
            member_id: None,
            leader_id: None,
            raft_term: None,
            error: None,
        };
        let r = tokio::time::timeout(Duration::from_secs(3), async {
            let mut c = crate::server::connect_tls(&endpoint, &tls).await?;
            anyhow::Ok(c.status().await?)
        })
        .await;
        match r {
            Ok(Ok(s)) => {
                m.member_id = s.header().map(|h| h.member_id());
                m.leader_id = Some(s.leader());
                m.raft_term = Some(s.raft_term());
            }
            Ok(Err(e)) => m.error = Some(format!("{e:#}")),
            Err(_) => m.error = Some("no answer within 3s".into()),
        }
        out.push(m);
    }
    out
}

/// The name (`store-N`) of the member the answering members agree is leader.
pub fn leader_name(members: &[StoreMember]) -> Option<String> {
    let leader = members
        .iter()
        .find_map(|m| m.leader_id.filter(|l| *l != 0))?;
    members
        .iter()
        .find(|m| m.member_id == Some(leader))
        .map(|m| m.name.clone())
}

/// An admin client for one apiserver URL (or several, with failover), few retries.
pub fn admin_client(layout: &Layout, urls: &[String], attempts: u32) -> Result<api::Client> {
    let api1 = layout.dir.join("apiserver-1");
    let ca = std::fs::read(api1.join("pki").join("ca.crt")).context("read the apiserver CA")?;
    let token = super::token_of(&api1.join("tokens.csv"), "admin")?;
    let mut config = api::Config::new(urls)?.with_ca_pem(ca).with_token(token);
    config.max_attempts = attempts;
    config.request_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    Ok(api::Client::new(config)?)
}

/// Whether the apiserver at `url` answers a read of a namespace (which goes to the store).
pub async fn apiserver_ready(layout: &Layout, url: &str) -> Result<()> {
    let c = admin_client(layout, &[url.to_string()], 1)?;
    c.get_json("/api/v1/namespaces/kube-system").await?;
    Ok(())
}

/// The holder of a Lease in kube-system (`None`: no Lease or no holder yet).
pub async fn lease_holder(client: &api::Client, name: &str) -> Result<Option<String>> {
    match client
        .get_json(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}"
        ))
        .await
    {
        Ok(v) => Ok(v
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The apiserver whose identity is `holder` (the apiserver's identities are
/// `<address>:<port>_<uuid>`, so the port names it).
pub fn apiserver_of_holder(layout: &Layout, holder: &str) -> Option<String> {
    (1..=MEMBERS)
        .find(|n| {
            let port = layout.apiserver_port(*n).to_string();
            let name = format!("apiserver-{n}");
            holder
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .any(|part| part == port || part == name)
        })
        .map(|n| format!("apiserver-{n}"))
}

/// (node name, Ready condition status) for every Node.
pub async fn nodes(client: &api::Client) -> Result<Vec<(String, String)>> {
    let list = client.get_json("/api/v1/nodes").await?;
    let mut out = Vec::new();
    for item in list["items"].as_array().cloned().unwrap_or_default() {
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ready = item
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["status"].as_str())
            .unwrap_or("Unknown")
            .to_string();
        out.push((name, ready));
    }
    Ok(out)
}

/// The whole report, as text.
pub async fn report(layout: &Layout, state: &super::State) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let members = store_members(layout).await;
    let leader = leader_name(&members);
    let _ = writeln!(s, "store (TLS, client certificates required):");
    for m in &members {
        let pid = pid_text(layout, state, &m.name);
        match &m.error {
            None => {
                let role = if Some(&m.name) == leader.as_ref() {
                    "leader"
                } else {
                    "follower"
                };
                let _ = writeln!(
                    s,
                    "  {:<12} {:<28} up    {role:<8} term {} {pid}",
                    m.name,
                    m.endpoint,
                    m.raft_term.unwrap_or(0)
                );
            }
            Some(e) => {
                let why = short(&pid, e);
                let _ = writeln!(s, "  {:<12} {:<28} DOWN  {pid}{why}", m.name, m.endpoint);
            }
        }
    }
    let _ = writeln!(s, "apiservers:");
    for n in 1..=MEMBERS {
        let url = format!("https://127.0.0.1:{}", layout.apiserver_port(n));
        let name = format!("apiserver-{n}");
        let pid = pid_text(layout, state, &name);
        match apiserver_ready(layout, &url).await {
            Ok(()) => {
                let _ = writeln!(s, "  {name:<12} {url:<28} ready {pid}");
            }
            Err(e) => {
                let why = short(&pid, &format!("{e:#}"));
                let _ = writeln!(s, "  {name:<12} {url:<28} DOWN  {pid}{why}");
            }
        }
    }
    let lb_pid = pid_text(layout, state, "lb");
    let _ = writeln!(
        s,
        "  {:<12} {:<28} (kubectl's server) {lb_pid}",
        "lb",
        layout.lb_url()
    );
    match admin_client(layout, &layout.apiserver_urls(), 3) {
        Ok(client) => {
            let _ = writeln!(s, "leases (kube-system):");
            for lease in ["kube-scheduler", "kube-controller-manager"] {
                let holder = match lease_holder(&client, lease).await {
                    Ok(Some(h)) => match apiserver_of_holder(layout, &h) {
                        Some(a) => format!("{a} ({h})"),
                        None => h,
                    },
                    Ok(None) => "(none)".into(),
                    Err(e) => format!("(unknown: {e})"),
                };
                let _ = writeln!(s, "  {lease:<24} held by {holder}");
            }
            let _ = writeln!(s, "nodes ({}):", runtime_text(&layout.runtime));
            match nodes(&client).await {
                Ok(ns) if ns.is_empty() => {
                    let _ = writeln!(s, "  (none registered)");
                }
                Ok(ns) => {
                    for (name, ready) in ns {
                        let agent = (1..=layout.agents)
                            .find(|n| layout.node_name(*n) == name)
                            .map(|n| format!("agent-{n}"))
                            .unwrap_or_default();
                        let ready = if ready == "True" { "Ready" } else { "NotReady" };
                        let pid = pid_text(layout, state, &agent);
                        let _ = writeln!(s, "  {name:<20} {ready:<9} {agent} {pid}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "  (cannot list nodes: {e})");
                }
            }
        }
        Err(e) => {
            let _ = writeln!(s, "(no apiserver client: {e:#})");
        }
    }
    s
}

/// Why a component does not answer: nothing more when its process is gone, else the
/// start of the error.
fn short(pid: &str, error: &str) -> String {
    if pid.contains("not running") {
        return String::new();
    }
    let e: String = error.chars().take(160).collect();
    format!(" ({e})")
}

pub fn runtime_text(runtime: &str) -> &'static str {
    if runtime == "fake" {
        "SIMULATED: fake runtime, no containers run"
    } else {
        "Docker runtime"
    }
}

fn pid_text(_layout: &Layout, state: &super::State, name: &str) -> String {
    match state.components.get(name) {
        Some(c) if super::proc::alive(c.pid, &c.program) => format!("pid {}", c.pid),
        Some(c) => format!("pid {} (not running)", c.pid),
        None => String::new(),
    }
}
