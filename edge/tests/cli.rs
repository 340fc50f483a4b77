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

#[test]
fn serve_answers_and_exits_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = tessera()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--data-dir",
        ])
        .arg(data.path().join("node"))
        .env("TESSERA_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog, so a node that never logs its address fails the test instead of hanging it.
    let pid = child.id();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    // The log line "tessera listening address=127.0.0.1:PORT" says where it listens.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("log ended before listening").unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
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

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("shutdown complete")),
        "{rest:#?}"
    );
}
