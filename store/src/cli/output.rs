//! Output formats shared by the client commands: the `--write-out` choice, JSON shaped
//! like etcdctl's (Go `encoding/json` of the protobuf structs: zero fields omitted, byte
//! strings base64), ASCII tables like etcdctl's, and small text helpers (human byte
//! sizes, Go-style durations). Rendering writes to a `Write` so it can be unit-tested.

use std::io::Write;
use std::time::Duration;

use etcd_client::proto::{PbKeyValue, PbResponseHeader};

/// The `-w/--write-out` choice.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// etcdctl's plain text.
    Simple,
    /// The raw response as JSON.
    Json,
    /// An ASCII table (only some commands).
    Table,
}

/// The error etcdctl gives for a format a command does not support.
pub(crate) fn unsupported(format: OutputFormat) -> anyhow::Error {
    let name = match format {
        OutputFormat::Simple => "simple",
        OutputFormat::Json => "json",
        OutputFormat::Table => "table",
    };
    anyhow::anyhow!("{name} not supported as output format")
}

/// Standard base64 (with padding), as Go encodes `[]byte` in JSON.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON value whose objects keep their field order (etcdctl's output follows the Go
/// struct field order; `serde_json::Value` would sort the keys).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object with a single field.
    pub(crate) fn field(name: &str, v: Json) -> Json {
        Json::Obj(vec![(name.to_string(), v)])
    }

    fn is_empty(&self) -> bool {
        match self {
            Json::Null => true,
            Json::Arr(a) => a.is_empty(),
            Json::Obj(o) => o.is_empty(),
            _ => false,
        }
    }
}

impl serde::Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Json::Null => ser.serialize_unit(),
            Json::Bool(b) => ser.serialize_bool(*b),
            Json::Int(i) => ser.serialize_i64(*i),
            Json::Uint(u) => ser.serialize_u64(*u),
            Json::Str(s) => ser.serialize_str(s),
            Json::Arr(items) => {
                let mut seq = ser.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Obj(fields) => {
                let mut map = ser.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&s)
    }
}

impl From<i64> for Json {
    fn from(v: i64) -> Self {
        Json::Int(v)
    }
}

impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::Uint(v)
    }
}

impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}

impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_string())
    }
}

impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}

impl From<Vec<Json>> for Json {
    fn from(v: Vec<Json>) -> Self {
        Json::Arr(v)
    }
}

/// Builds a JSON object in field order, skipping zero / empty values (protobuf JSON
/// `omitempty`) unless added with `always`.
#[derive(Default)]
pub(crate) struct Obj(Vec<(String, Json)>);

impl Obj {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn int(self, name: &str, v: i64) -> Self {
        if v != 0 { self.always(name, v) } else { self }
    }

    pub(crate) fn uint(self, name: &str, v: u64) -> Self {
        if v != 0 { self.always(name, v) } else { self }
    }

    pub(crate) fn bool(self, name: &str, v: bool) -> Self {
        if v { self.always(name, true) } else { self }
    }

    pub(crate) fn bytes(self, name: &str, v: &[u8]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.always(name, base64(v))
        }
    }

    pub(crate) fn str(self, name: &str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.always(name, v)
        }
    }

    /// Adds `v` unless it is null, an empty object or an empty array.
    pub(crate) fn val(self, name: &str, v: Json) -> Self {
        if v.is_empty() {
            self
        } else {
            self.always(name, v)
        }
    }

    /// Adds `v` as is, even when zero (for fields etcdctl always prints).
    pub(crate) fn always(mut self, name: &str, v: impl Into<Json>) -> Self {
        self.0.push((name.to_string(), v.into()));
        self
    }

    /// Copies every field of another object (Go's embedded struct flattening).
    pub(crate) fn flatten(mut self, other: Json) -> Self {
        if let Json::Obj(fields) = other {
            self.0.extend(fields);
        }
        self
    }

    pub(crate) fn build(self) -> Json {
        Json::Obj(self.0)
    }
}

/// `{"cluster_id":..,"member_id":..,"revision":..,"raft_term":..}` (zeros omitted).
pub(crate) fn header_json(h: Option<&PbResponseHeader>) -> Json {
    match h {
        None => Json::Null,
        Some(h) => Obj::new()
            .uint("cluster_id", h.cluster_id)
            .uint("member_id", h.member_id)
            .int("revision", h.revision)
            .uint("raft_term", h.raft_term)
            .build(),
    }
}

/// One key-value: key, create_revision, mod_revision, version, value, lease.
pub(crate) fn kv_json(kv: &PbKeyValue) -> Json {
    Obj::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .build()
}

pub(crate) fn kvs_json(kvs: &[PbKeyValue]) -> Json {
    Json::Arr(kvs.iter().map(kv_json).collect())
}

/// Writes one JSON document followed by a newline.
/// Prints a response that carries only a header: `{"header": ...}` as JSON, `text` in
/// the simple format (compaction, lease revoke, move-leader).
pub(crate) fn write_header_or_text(
    out: &mut impl Write,
    format: OutputFormat,
    header: Option<&PbResponseHeader>,
    text: impl std::fmt::Display,
) -> std::io::Result<()> {
    if format == OutputFormat::Json {
        write_json(out, &Obj::new().val("header", header_json(header)).build())
    } else {
        writeln!(out, "{text}")
    }
}

pub(crate) fn write_json(out: &mut impl Write, v: &Json) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")
}

/// Writes `data` then a newline (keys and values are printed raw, like etcdctl).
pub(crate) fn line(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    out.write_all(b"\n")
}

/// Writes a key-value pair as etcdctl's simple format does.
pub(crate) fn simple_kv(
    out: &mut impl Write,
    kv: &PbKeyValue,
    keys_only: bool,
    values_only: bool,
) -> std::io::Result<()> {
    if !values_only {
        line(out, &kv.key)?;
    }
    if !keys_only {
        line(out, &kv.value)?;
    } else if !values_only {
        // etcdctl prints the (empty) value line even for --keys-only.
        line(out, b"")?;
    }
    Ok(())
}

/// Human byte size in SI units as go-humanize prints it: `20 kB`, `1.2 MB`, `7 B`.
pub(crate) fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 10.0 {
        return format!("{n} B");
    }
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let exp = ((n.ln() / 1000f64.ln()).floor() as usize).min(UNITS.len() - 1);
    let val = (n / 1000f64.powi(exp as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[exp])
    } else {
        format!("{val:.0} {}", UNITS[exp])
    }
}

/// A duration as Go's `time.Duration.String()` prints it: `1.547717ms`, `2s`, `1m30s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    fn trim(s: String) -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
    if nanos == 0 {
        "0s".into()
    } else if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        format!("{}µs", trim(format!("{:.3}", nanos as f64 / 1e3)))
    } else if nanos < 1_000_000_000 {
        format!("{}ms", trim(format!("{:.6}", nanos as f64 / 1e6)))
    } else {
        let secs = d.as_secs();
        let frac = trim(format!("{:.9}", f64::from(d.subsec_nanos()) / 1e9));
        let frac = frac.trim_start_matches('0');
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{s}{frac}s"));
        out
    }
}

/// Renders an ASCII table like etcdctl's: centred upper-case headers, right-aligned
/// cells, `+---+` borders.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let border = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let mut out = border.clone();
    out.push('|');
    for (h, w) in headers.iter().zip(&widths) {
        let pad = w - h.chars().count();
        let left = pad / 2;
        out.push_str(&format!(
            " {}{}{} |",
            " ".repeat(left),
            h.to_uppercase(),
            " ".repeat(pad - left)
        ));
    }
    out.push('\n');
    out.push_str(&border);
    for row in rows {
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            out.push_str(&format!(" {cell:>w$} |"));
        }
        out.push('\n');
    }
    out.push_str(&border);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"bar"), "YmFy");
        assert_eq!(base64(b"k1"), "azE=");
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn kv_json_omits_zero_fields() {
        let kv = PbKeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            value: b"bar".to_vec(),
            lease: 0,
        };
        assert_eq!(
            serde_json::to_string(&kv_json(&kv)).unwrap(),
            r#"{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFy"}"#
        );
        let tomb = PbKeyValue {
            key: b"w1".to_vec(),
            mod_revision: 20,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&kv_json(&tomb)).unwrap(),
            r#"{"key":"dzE=","mod_revision":20}"#
        );
    }

    #[test]
    fn header_json_keeps_large_ids_exact() {
        let h = PbResponseHeader {
            cluster_id: 324952591200643719,
            member_id: 17_000_000_000_000_000_001,
            revision: 17,
            raft_term: 2,
        };
        assert_eq!(
            serde_json::to_string(&header_json(Some(&h))).unwrap(),
            r#"{"cluster_id":324952591200643719,"member_id":17000000000000000001,"revision":17,"raft_term":2}"#
        );
        let only_rev = PbResponseHeader {
            revision: 11,
            ..Default::default()
        };
        assert_eq!(
            header_json(Some(&only_rev)).to_string(),
            r#"{"revision":11}"#
        );
    }

    #[test]
    fn human_bytes_like_go_humanize() {
        assert_eq!(human_bytes(7), "7 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(25_000_000), "25 MB");
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_nanos(1_547_717)), "1.547717ms");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_micros(12)), "12µs");
        assert_eq!(go_duration(Duration::from_nanos(5)), "5ns");
    }

    #[test]
    fn table_layout() {
        let t = table(
            &["endpoint", "health"],
            &[vec!["127.0.0.1:2379".into(), "true".into()]],
        );
        let expected = "\
+----------------+--------+
|    ENDPOINT    | HEALTH |
+----------------+--------+
| 127.0.0.1:2379 |   true |
+----------------+--------+
";
        assert_eq!(t, expected);
    }

    #[test]
    fn simple_kv_modes() {
        let kv = PbKeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        let mut out = Vec::new();
        simple_kv(&mut out, &kv, false, false).unwrap();
        simple_kv(&mut out, &kv, false, true).unwrap();
        simple_kv(&mut out, &kv, true, false).unwrap();
        assert_eq!(out, b"k\nv\nv\nk\n\n");
    }
}
