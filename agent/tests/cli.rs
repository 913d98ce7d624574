//! The `agent` binary refuses bad flags with a clear message and a failing exit code,
//! before it touches Docker or the apiserver.

use std::process::Command;

fn agent(args: &[&str], kubeconfig: Option<&std::path::Path>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    let out = cmd.args(args).output().expect("run agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    // Nothing listens at this address: the agent must fail before it would connect.
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )
    .unwrap();
    let node = [
        "--node-name",
        "n1",
        "--node-ip",
        "127.0.0.1",
        "--runtime",
        "fake",
    ];
    let cases: Vec<(Vec<&str>, bool, &str)> = vec![
        (vec!["--node-name", "n1"], false, "give --kubeconfig"),
        (vec!["--node-name", "n1"], true, "--node-ip IP is required"),
        (
            [&node[..], &["--cpu", "lots"]].concat(),
            true,
            "--cpu \"lots\" is not a quantity",
        ),
        (
            [&node[..], &["--memory", "0"]].concat(),
            true,
            "--memory \"0\" must be positive",
        ),
        (
            [&node[..], &["--labels", "nokey"]].concat(),
            true,
            "is not key=value",
        ),
        (
            [&node[..], &["--pods", "0"]].concat(),
            true,
            "--pods must be at least 1",
        ),
        (
            vec![
                "--node-name",
                "n1",
                "--node-ip",
                "127.0.0.1",
                "--runtime",
                "podman",
            ],
            true,
            "unknown --runtime",
        ),
        (vec!["--simulate", "0"], true, "between 1 and"),
        (
            vec!["--apiserver", "https://127.0.0.1:1"],
            false,
            "--apiserver needs --kubeconfig",
        ),
        (
            vec!["--apiserver", "not a url", "--node-name", "n"],
            true,
            "--apiserver",
        ),
    ];
    for (args, with_kc, expect) in cases {
        let (ok, stderr) = agent(&args, with_kc.then_some(kc.as_path()));
        assert!(!ok, "agent {args:?} should fail");
        assert!(
            stderr.contains(expect),
            "agent {args:?}: expected {expect:?} in:\n{stderr}"
        );
    }
    let (ok, stderr) = agent(
        &["--kubeconfig", "/nonexistent/kc", "--node-name", "n"],
        None,
    );
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/kc"), "{stderr}");
}
