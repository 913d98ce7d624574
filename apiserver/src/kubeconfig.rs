//! The kubeconfig written for the admin at first start: one cluster (server URL and the
//! CA embedded as `certificate-authority-data`), one user with a bearer token, and a
//! current context, in the YAML `kubectl` reads. Strings are written as double-quoted
//! JSON strings, which YAML reads as the same strings whatever characters they hold.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A YAML double-quoted scalar holding exactly `s`.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// The kubeconfig document.
pub fn render(
    cluster_name: &str,
    server_url: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
) -> String {
    let context = format!("{user}@{cluster_name}");
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user_q}
  user:
    token: {token}
contexts:
- name: {context_q}
  context:
    cluster: {cluster}
    user: {user_q}
current-context: {context_q}
preferences: {{}}
",
        cluster = quote(cluster_name),
        server = quote(server_url),
        ca = quote(&STANDARD.encode(ca_pem.as_bytes())),
        user_q = quote(user),
        token = quote(token),
        context_q = quote(&context),
    )
}

/// Writes a kubeconfig (0600, temp + rename) with one cluster (server URL, embedded CA), one
/// user (bearer token) and a current context, readable by kubectl v1.32.
pub fn write_kubeconfig(
    path: &Path,
    cluster_name: &str,
    server_url: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
) -> Result<(), std::io::Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let doc = render(cluster_name, server_url, ca_pem, user, token);
    crate::tls::write_atomic(path, doc.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// The real kubectl on the machine reads what we write.
    #[test]
    fn kubectl_reads_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.kubeconfig");
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        write_kubeconfig(
            &path,
            "kvstore",
            "https://127.0.0.1:6443",
            ca,
            "admin",
            "tok:\"en#1",
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let out = Command::new("kubectl")
            .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
            .arg(&path)
            .output()
            .expect("kubectl is installed on this machine");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["current-context"], "admin@kvstore");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        let ca_b64 = v["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        assert_eq!(STANDARD.decode(ca_b64).unwrap(), ca.as_bytes());
        assert_eq!(v["users"][0]["user"]["token"], "tok:\"en#1");
        assert_eq!(v["contexts"][0]["context"]["user"], "admin");
        assert_eq!(v["contexts"][0]["context"]["cluster"], "kvstore");
    }
}
