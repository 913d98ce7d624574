//! Makes `Debug` output of protobuf messages readable: byte lists such as `[107, 47, 97]`
//! (how keys and values print) become `b"k/a"` when all bytes are printable ASCII.

/// Rewrites printable byte lists in a `Debug` string (plain or pretty) as byte strings.
pub fn readable(debug: &str) -> String {
    let bytes = debug.as_bytes();
    let mut out = String::with_capacity(debug.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'['
            && let Some((text, end)) = byte_list(&debug[i + 1..])
        {
            out.push_str("b\"");
            out.push_str(&text);
            out.push('"');
            i += 1 + end;
            continue;
        }
        let ch = debug[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Parses `n, n, …]` (any whitespace, optional trailing comma) of printable ASCII codes;
/// returns the text and the length consumed including `]`.
fn byte_list(s: &str) -> Option<(String, usize)> {
    let end = s.find(']')?;
    let inner = &s[..end];
    let mut text = String::new();
    for part in inner.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let n: u8 = part.parse().ok()?;
        if !(0x20..0x7f).contains(&n) || n == b'"' || n == b'\\' {
            return None;
        }
        text.push(n as char);
    }
    if text.is_empty() {
        return None;
    }
    Some((text, end + 1))
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn rewrites_plain_and_pretty_lists() {
        assert_eq!(
            readable("key: [107, 47, 97], x: []"),
            "key: b\"k/a\", x: []"
        );
        assert_eq!(readable("v: [\n    118,\n    49,\n],"), "v: b\"v1\",");
        assert_eq!(readable("v: [0, 1]"), "v: [0, 1]");
    }
}
