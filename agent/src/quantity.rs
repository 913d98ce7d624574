//! Parses the few Kubernetes resource quantity forms the agent needs for container limits
//! (CPU in cores or millicores, memory in bytes with decimal or binary suffixes).
//! `api::quantity` is being written by another part of the team; once it lands, this
//! module should give way to it.

use crate::error::{AgentError, Result};

/// CPU quantity in millicores: "2" → 2000, "0.5" → 500, "250m" → 250.
pub fn cpu_millis(quantity: &str) -> Result<i64> {
    let q = quantity.trim();
    let bad = || AgentError::InvalidSpec(format!("cpu quantity {quantity:?}"));
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(bad);
    }
    let cores: f64 = q.parse().map_err(|_| bad())?;
    if !cores.is_finite() || !(0.0..=1e6).contains(&cores) {
        return Err(bad());
    }
    Ok((cores * 1000.0).round() as i64)
}

/// Memory quantity in bytes: "128Mi", "1G", "1e6", "512".
pub fn memory_bytes(quantity: &str) -> Result<i64> {
    let q = quantity.trim();
    let bad = || AgentError::InvalidSpec(format!("memory quantity {quantity:?}"));
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * factor;
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(cpu_millis("0.5").unwrap(), 500);
        assert_eq!(cpu_millis("250m").unwrap(), 250);
        assert!(cpu_millis("lots").is_err());
        assert!(cpu_millis("-1").is_err());
        assert!(cpu_millis("-5m").is_err());
    }

    #[test]
    fn memory_forms() {
        assert_eq!(memory_bytes("128Mi").unwrap(), 128 * 1024 * 1024);
        assert_eq!(memory_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(memory_bytes("1e6").unwrap(), 1_000_000);
        assert_eq!(memory_bytes("512").unwrap(), 512);
        assert_eq!(memory_bytes("1.5Ki").unwrap(), 1536);
        assert!(memory_bytes("12 apples").is_err());
        assert!(memory_bytes("").is_err());
    }
}
