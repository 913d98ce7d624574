//! Name and label syntax shared by validation and selectors: DNS-1123 labels and
//! subdomains, qualified names (label keys), label values. Each check returns `None`
//! when the value is fine or `Some(reason)` in plain English, as kube's messages do.

/// Longest DNS-1123 label (a namespace, a service name).
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// Longest DNS-1123 subdomain (most object names).
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
/// Longest label value and the name part of a qualified name.
pub const QUALIFIED_NAME_MAX_LEN: usize = 63;

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `None` if `s` is a DNS-1123 label: lower-case alphanumerics and '-', starting and
/// ending with an alphanumeric, at most 63 characters.
pub fn dns1123_label(s: &str) -> Option<String> {
    if s.len() > DNS1123_LABEL_MAX_LEN {
        return Some(format!(
            "must be no more than {DNS1123_LABEL_MAX_LEN} characters"
        ));
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-');
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
         and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
            .to_string()
    })
}

/// `None` if `s` is a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253
/// characters in all.
pub fn dns1123_subdomain(s: &str) -> Option<String> {
    if s.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        return Some(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX_LEN} characters"
        ));
    }
    let ok = !s.is_empty() && s.split('.').all(|part| dns1123_label(part).is_none());
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
         or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
            .to_string()
    })
}

/// Alphanumerics with '-', '_' or '.' inside: the name part of a qualified name and a
/// non-empty label value.
fn is_qualified_token(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// `None` if `s` is a qualified name (a label or annotation key): an optional DNS-1123
/// subdomain prefix and '/', then a name of at most 63 alphanumerics, '-', '_', '.'.
pub fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".to_string());
        }
        if let Some(e) = dns1123_subdomain(p) {
            return Some(format!("prefix part {e}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".to_string());
    }
    if name.len() > QUALIFIED_NAME_MAX_LEN {
        return Some(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX_LEN} characters"
        ));
    }
    (!is_qualified_token(name)).then(|| {
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and \
         end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc'), with \
         an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            .to_string()
    })
}

/// `None` if `s` is a valid label value: empty, or at most 63 alphanumerics, '-', '_',
/// '.', starting and ending with an alphanumeric.
pub fn label_value(s: &str) -> Option<String> {
    if s.len() > QUALIFIED_NAME_MAX_LEN {
        return Some(format!(
            "must be no more than {QUALIFIED_NAME_MAX_LEN} characters"
        ));
    }
    (!s.is_empty() && !is_qualified_token(s)).then(|| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
         or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or \
         'my_value', or '12345')"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_and_subdomains() {
        assert!(dns1123_label("web-1").is_none());
        assert!(dns1123_label("Web").is_some());
        assert!(dns1123_label("-a").is_some());
        assert!(dns1123_label("a-").is_some());
        assert!(dns1123_label("").is_some());
        assert!(dns1123_label("a.b").is_some());
        assert!(dns1123_label(&"a".repeat(63)).is_none());
        assert!(dns1123_label(&"a".repeat(64)).is_some());
        assert!(dns1123_subdomain("a.b-c.d").is_none());
        assert!(dns1123_subdomain("a..b").is_some());
        assert!(dns1123_subdomain("under_score").is_some());
        assert!(dns1123_subdomain(&"a".repeat(254)).is_some());
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(qualified_name("app").is_none());
        assert!(qualified_name("app.kubernetes.io/name").is_none());
        assert!(qualified_name("My_Key.x").is_none());
        assert!(qualified_name("/x").is_some());
        assert!(qualified_name("a/").is_some());
        assert!(qualified_name("Bad.Prefix/x").is_some());
        assert!(qualified_name("a/b/c").is_some());
        assert!(qualified_name("-x").is_some());
        assert!(label_value("").is_none());
        assert!(label_value("v1.2_3").is_none());
        assert!(label_value("a b").is_some());
        assert!(label_value(&"v".repeat(64)).is_some());
    }
}
