//! A free block of ports for a test cluster (`--base-port`).

use std::net::TcpListener;

/// The ports a cluster with `agents` agents uses from `base` (see [`super::Layout`]).
fn needed(base: u16, agents: usize) -> Vec<(String, u16)> {
    let mut v = vec![("127.0.0.1".to_string(), base)];
    for n in 1..=super::MEMBERS as u16 {
        for off in [0, 10, 20] {
            v.push(("127.0.0.1".into(), base + off + n));
        }
    }
    for n in 1..=agents as u16 {
        v.push((format!("127.0.0.{}", n + 1), base + 30 + n));
    }
    v
}

/// A base port whose whole block (`base..base+40`) could be bound a moment ago, chosen
/// from a pseudo-random start in 20000..60000 so parallel test processes rarely meet.
pub fn free_base_port(agents: usize) -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let mut base = 20000 + (seed % 800) as u16 * 50;
    loop {
        let all_free = needed(base, agents)
            .iter()
            .all(|(ip, p)| TcpListener::bind((ip.as_str(), *p)).is_ok());
        if all_free {
            return base;
        }
        base = if base >= 59900 { 20000 } else { base + 50 };
    }
}
