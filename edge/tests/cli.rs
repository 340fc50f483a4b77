//! The `tessera` binary as an operator meets it: `tessera config` shows the effective
//! configuration or names the bad key, and `tessera serve` starts, answers, and exits
//! cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn tessera() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TESSERA_") {
            command.env_remove(name);
        }
    }
    command
}

#[test]
fn config_prints_the_effective_configuration() {
    let output = tessera()
        .args(["config", "--workers", "3"])
        .env("TESSERA_HTTP__BODY_BYTES_MAX", "123456")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("workers = 3"), "{text}");
    assert!(text.contains("body_bytes_max = 123456"), "{text}");
}

#[test]
fn a_bad_setting_stops_the_node_with_a_message_naming_it() {
    let output = tessera()
        .args(["serve"])
        .env("TESSERA_POOL__QUEUE_MAX", "-3")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("queue_max"), "{stderr}");

    let output = tessera()
        .args(["serve", "--config", "/nonexistent/tessera.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/tessera.toml"));
}

/// `tessera serve` on a free port with one worker, its log on a pipe, and a watchdog, so a
/// node that never logs its address fails the test instead of hanging it.
fn serve(data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let child = tessera()
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("TESSERA_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    child
}

#[test]
fn serve_answers_and_exits_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = serve(&data.path().join("node"), &[], &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = listening_address(&mut lines);
    assert!(data.path().join("node").is_dir(), "data directory created");

    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    terminate_cleanly(child, lines, "after a request");
}

/// The node's log on stdout, line by line.
type Log = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Reads the log up to the line "tessera listening address=127.0.0.1:PORT"; that address.
fn listening_address(lines: &mut Log) -> String {
    loop {
        let line = lines.next().expect("log ended before listening").unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            return rest.split_whitespace().next().unwrap().to_owned();
        }
    }
}

/// Sends SIGTERM to `child`, which must exit 0 having logged "shutdown complete".
fn terminate_cleanly(mut child: std::process::Child, lines: Log, case: &str) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{case}: exit after SIGTERM: {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("shutdown complete")),
        "{case}: {rest:#?}"
    );
}

/// A SIGTERM sent the moment the node says it listens is a clean shutdown, not the
/// signal's default death: the handler is installed before the address is logged. (CI
/// once saw the node killed by a SIGTERM that arrived before the serve loop first polled
/// a lazily installed handler.)
#[test]
fn a_sigterm_right_after_listening_still_shuts_down_cleanly() {
    for round in 0..8 {
        let data = tempfile::tempdir().unwrap();
        let mut child = serve(&data.path().join("node"), &[], &[]);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        listening_address(&mut lines);
        terminate_cleanly(child, lines, &format!("round {round}"));
    }
}

/// One HTTP/1.1 exchange on a fresh connection; the whole answer as text.
fn exchange(address: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// The request log as an operator reads it (JSON lines on stdout): a line per request
/// with its route, status, error code, bytes and steps; none for a successful health
/// probe. And the first start's operator token is named by its file, never printed.
#[test]
fn the_request_log_has_a_line_per_request_and_the_log_holds_no_token() {
    let data = tempfile::tempdir().unwrap();
    let mut child = serve(
        &data.path().join("node"),
        &["--log-format", "json"],
        &[("TESSERA_AUTH__ANONYMOUS_RESIZE", "true")],
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let address = loop {
        let line = lines.next().expect("log ended before listening").unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(line);
        if let Some(address) = json["fields"]["address"].as_str() {
            break address.to_owned();
        }
    };
    let health = exchange(
        &address,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let missing = exchange(
        &address,
        b"GET /nope HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 10, 10]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut request = format!(
        "POST /v1/resize?w=16&format=png HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        png.len()
    )
    .into_bytes();
    request.extend_from_slice(&png);
    let resized = exchange(&address, &request);
    assert!(resized.starts_with("HTTP/1.1 200"), "{resized}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    seen.extend(lines.map_while(Result::ok));
    let requests: Vec<serde_json::Value> = seen
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|j| j["target"] == "tessera::request")
        .map(|j| j["fields"].clone())
        .collect();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let missing = &requests[0];
    assert_eq!(missing["route"], "unmatched");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["code"], "not_found");
    let resized = &requests[1];
    assert_eq!(resized["method"], "POST");
    assert_eq!(resized["route"], "/v1/resize");
    assert_eq!(resized["status"], 200);
    assert_eq!(resized["bytes_in"], png.len() as u64);
    assert!(resized["bytes_out"].as_u64().unwrap() > 0, "{resized}");
    assert!(resized["decode_ms"].as_f64().is_some(), "{resized}");
    assert!(resized["ms"].as_f64().is_some(), "{resized}");
    // No operator token was configured: one was made, and only its file is named.
    let token = std::fs::read_to_string(data.path().join("node/operator-token")).unwrap();
    let token = token.trim();
    assert!(token.starts_with("top_"));
    assert!(
        seen.iter().all(|l| !l.contains(token)),
        "the token reached the log"
    );
    assert!(
        seen.iter().any(|l| l.contains("operator-token")),
        "the log does not name the token's file"
    );
}

/// `tessera config` never prints the cluster key (it ends up in tickets and chats).
#[test]
fn config_does_not_print_the_cluster_key() {
    let key = "ab".repeat(32);
    let output = tessera()
        .args(["config"])
        .env("TESSERA_CLUSTER__CLUSTER_KEY", &key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains(&key), "{text}");
    assert!(
        text.contains("cluster_key = \"(set; not shown)\""),
        "{text}"
    );
}

/// A command without a token says which setting is missing, before any request.
#[test]
fn a_command_without_a_token_says_how_to_give_one() {
    let output = tessera()
        .args(["tenant", "list", "--node", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TESSERA_TOKEN"), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
}

/// Output piped into a reader that leaves early (`| head -1`) ends the command quietly:
/// no panic message on a broken pipe.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child = tessera()
        .args(["token", "new"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader leaves before the command writes.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

/// `tessera sign` makes the URL the node verifies: the same path as the node's own
/// signer, keyed with the bytes of the secret's hex digits, with `exp` from `--ttl-s`.
#[test]
fn sign_prints_a_url_the_node_verifies() {
    let secret = "0f".repeat(32);
    let output = tessera()
        .args(["sign", "42", "w=200,h=100", "https://img.example.com/a.jpg"])
        .args(["--secret", &secret, "--base", "https://edge.example.com/"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let expected = tessera_edge::http::signed::signed_path(
        tessera_crdt::TenantId(42),
        &[0x0f; 32],
        "w=200,h=100",
        "https://img.example.com/a.jpg",
    );
    assert_eq!(url, format!("https://edge.example.com{expected}"));
    let parsed = tessera_edge::http::signed::parse(&expected, None).unwrap();
    assert_eq!(
        parsed.mac,
        tessera_edge::http::signed::sign(&[0x0f; 32], &parsed.message)
    );

    let output = tessera()
        .args(["sign", "42", "_", "https://img.example.com/a.jpg"])
        .args(["--secret", &secret, "--ttl-s", "600"])
        .output()
        .unwrap();
    let path = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let parsed = tessera_edge::http::signed::parse(&path, None).unwrap();
    let now_s = tessera_edge::control::now_ms() / 1000;
    let exp = parsed.expires_s.expect("an expiry");
    assert!(exp > now_s && exp <= now_s + 600, "{exp} vs {now_s}");

    let refused = tessera()
        .args(["sign", "42", "_", "https://img.example.com/a.jpg"])
        .args(["--secret", "not-hex"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("hex digits"));
}

/// Shell completions and the man page come from the same definitions as `--help`: the
/// bash script parses, it completes the commands, and the man page is roff naming them.
#[test]
fn completions_and_the_man_page_are_generated() {
    let bash = tessera().args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success(), "{bash:?}");
    let script = String::from_utf8(bash.stdout).unwrap();
    for command in ["tenant", "quota", "sign", "export"] {
        assert!(script.contains(command), "{command} missing");
    }
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        check.wait().unwrap().success(),
        "the bash completion does not parse"
    );
    for shell in ["zsh", "fish"] {
        let out = tessera().args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let man = tessera().arg("man").output().unwrap();
    assert!(man.status.success(), "{man:?}");
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(page.contains(".TH tessera 1"), "{page}");
    assert!(page.contains("serve") && page.contains("quota"), "{page}");
}
