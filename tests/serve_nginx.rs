//! docs/serve/nginx.conf in front of two `stipple serve` processes on 127.0.0.1: least_conn
//! spreads concurrent requests over both; `/health` answers through nginx; after one server
//! gets SIGTERM every request still succeeds on the other. Needs nginx (Debian package
//! `nginx`): skipped with a message when it is absent, unless CI is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Client, ServerProcess};
use serde_json::json;

fn find_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A free port on 127.0.0.1 (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// nginx as a child, stopped with SIGQUIT (graceful) when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The documented config with the test's addresses.
fn config(a: &str, b: &str, port: u16) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/serve/nginx.conf"),
    )
    .expect("read docs/serve/nginx.conf");
    for needle in [
        "server 127.0.0.1:7860 ",
        "server 127.0.0.1:7861 ",
        "listen 127.0.0.1:8080;",
        "least_conn;",
    ] {
        assert!(
            text.contains(needle),
            "docs/serve/nginx.conf lacks {needle:?}"
        );
    }
    text.replace("server 127.0.0.1:7860 ", &format!("server {a} "))
        .replace("server 127.0.0.1:7861 ", &format!("server {b} "))
        .replace(
            "listen 127.0.0.1:8080;",
            &format!("listen 127.0.0.1:{port};"),
        )
}

fn small(seed: i64) -> serde_json::Value {
    json!({"prompt": "a red apple", "steps": 2, "width": 16, "height": 16, "seed": seed})
}

#[test]
fn nginx_least_conn_spreads_requests_and_fails_over() {
    let Some(nginx) = find_nginx() else {
        assert!(!in_ci(), "CI needs nginx: apt-get install -y nginx");
        eprintln!("skipping: nginx is not installed (apt-get install nginx)");
        return;
    };
    let Some(mut first) = ServerProcess::start(&[]) else {
        return;
    };
    let Some(second) = ServerProcess::start(&[]) else {
        return;
    };
    let host = |url: &str| url.trim_start_matches("http://").to_string();
    let (a, b) = (host(&first.url), host(&second.url));
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("stipple-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["logs", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    // Workers may run as another user when the test runs as root.
    let _ = Command::new("chmod")
        .args(["-R", "a+rwx"])
        .arg(&dir)
        .status();
    std::fs::write(dir.join("nginx.conf"), config(&a, &b, port)).unwrap();
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-e", "stderr", "-g", "daemon off;"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx(child);
    let client = Client::new(&format!("http://127.0.0.1:{port}"));

    // Health through nginx, once it listens.
    let probe = Client::with_timeout(&client.base, Duration::from_secs(5));
    let start = Instant::now();
    let mut health = None;
    while start.elapsed() < Duration::from_secs(30) && health.is_none() {
        match probe.try_get("/health").ok() {
            Some(reply) if reply.status == 200 => health = Some(reply),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let health = health.expect("nginx did not answer /health within 30 s");
    assert_eq!(health.json()["status"], "ok");

    // Concurrent requests land on both servers.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || client.post("/sdapi/v1/txt2img", &small(i)))
        })
        .collect();
    let mut upstreams = Vec::new();
    for t in threads {
        let reply = t.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        upstreams.push(reply.header("x-upstream").expect("X-Upstream").to_string());
    }
    eprintln!("upstreams: {upstreams:?}");
    for server in [&a, &b] {
        assert!(
            upstreams.iter().any(|u| u == server),
            "no request went to {server}: {upstreams:?}"
        );
    }

    // One server stops: the other answers everything.
    first.signal("TERM");
    let status = first
        .wait(Duration::from_secs(60))
        .expect("server did not stop");
    assert!(status.success());
    for i in 0..6 {
        let reply = client.post("/sdapi/v1/txt2img", &small(100 + i));
        assert_eq!(reply.status, 200, "{}", reply.text);
        let upstream = reply.header("x-upstream").unwrap_or_default();
        assert!(upstream.ends_with(&b), "answered by {upstream}");
    }
    assert_eq!(client.get("/health").json()["status"], "ok");
    drop(nginx);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
