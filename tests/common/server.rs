//! `stipple serve` as a child process on 127.0.0.1 (port chosen by the OS, read from its first
//! stdout line), and a small blocking HTTP client for it. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

/// How long a server may take to load the tiny model and bind.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `stipple serve`; sent SIGTERM (then killed) when dropped.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    pub pid: u32,
}

/// The tiny model every server test uses.
pub fn tiny_model() -> String {
    super::golden::fixture("tiny-pipe").display().to_string()
}

impl ServerProcess {
    /// `stipple serve -m tiny-pipe --port 0 ARGS…`; None (test skipped) without an adapter
    /// outside CI (`common::gpu` panics in CI).
    pub fn start(args: &[&str]) -> Option<ServerProcess> {
        super::gpu()?;
        let model = tiny_model();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stipple"))
            .args(["serve", "-m", &model, "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn stipple serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            let _ = tx.send(first);
            for _ in lines {} // keep the pipe open and drained
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("stipple serve printed no address within {START_TIMEOUT:?}");
            }
        };
        let Some(url) = line.strip_prefix("listening on ") else {
            let status = child.wait().expect("wait");
            panic!("stipple serve did not start ({status}); first line {line:?}");
        };
        let pid = child.id();
        Some(ServerProcess {
            child,
            url: url.trim().to_string(),
            pid,
        })
    }

    /// Sends `signal` (e.g. "TERM") to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Resident set size of the server process (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            if self.wait(Duration::from_secs(30)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

/// A blocking client for one server, with an optional `Authorization` header.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub auth: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client::with_timeout(base, Duration::from_secs(300))
    }

    pub fn with_timeout(base: &str, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            auth: None,
            agent,
        }
    }

    fn finish(
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply, ureq::Error> {
        let mut response = response?;
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let retry_after = headers
            .iter()
            .find(|(n, _)| n == "retry-after")
            .map(|(_, v)| v.clone());
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()?;
        Ok(Reply {
            status,
            retry_after,
            headers,
            text,
        })
    }

    /// GET; transport errors (connection refused, timeouts) are returned.
    pub fn try_get(&self, path: &str) -> Result<Reply, ureq::Error> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        Self::finish(request.call())
    }

    /// GET, failing the test on transport errors.
    pub fn get(&self, path: &str) -> Reply {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST a raw body; transport errors (timeouts) are returned.
    pub fn try_post(&self, path: &str, body: &[u8]) -> Result<Reply, ureq::Error> {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        Self::finish(request.send(body))
    }

    /// POST JSON, failing the test on transport errors.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.try_post(path, body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

/// Opens a connection to `base` and writes a raw HTTP/1.1 request head and `body` without
/// reading: to disconnect mid-request, or to send a `Content-Length` without its body.
pub fn raw_send(base: &str, head: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).expect("connect");
    stream
        .write_all(head.as_bytes())
        .expect("write request head");
    stream.write_all(body).expect("write request body");
    stream
}

/// Reads a response from `stream` until the server closes it (at most 60 s): the status and
/// the body (after the blank line).
pub fn raw_read(mut stream: TcpStream) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&bytes).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A decoded base64 PNG: size, RGB bytes and its `parameters` text chunk.
pub struct Png {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub parameters: Option<String>,
}

pub fn decode_png_base64(text: &str) -> Png {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    decode_png(&bytes)
}

pub fn decode_png(bytes: &[u8]) -> Png {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut rgb = vec![0; reader.output_buffer_size().expect("buffer size")];
    let frame = reader.next_frame(&mut rgb).expect("PNG data");
    rgb.truncate(frame.buffer_size());
    let info = reader.info();
    let parameters = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .map(|c| c.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|c| c.keyword == "parameters")
                .and_then(|c| c.get_text().ok())
        });
    Png {
        width: frame.width,
        height: frame.height,
        rgb,
        parameters,
    }
}
