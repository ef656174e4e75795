//! `stipple bench serve`: a load test of `stipple serve`. Starts the server as a child process on
//! 127.0.0.1 (any free port), warms it up, then runs CLIENTS threads that each send REQUESTS
//! txt2img requests back to back; reports requests/s, latency percentiles, errors (503s from a
//! full queue counted apart) and the server's resident memory before and after.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::generate::DEFAULT_MODEL;

#[derive(clap::Args)]
pub struct ServeBenchArgs {
    /// Model folder to serve (default: the model in weights/).
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Image width and height.
    #[arg(long, default_value_t = 16)]
    pub size: u32,
    /// Denoising steps per request.
    #[arg(long, default_value_t = 2)]
    pub steps: u32,
    /// The server's --queue.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Give up after this many seconds (the requests not sent are reported).
    #[arg(long, default_value_t = 1800)]
    pub max_seconds: u64,
}

/// Resident set size of process `pid` (Linux `/proc`), 0 elsewhere.
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The child server, stopped with SIGTERM when dropped.
struct ServerChild(Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..300 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one request ended as.
enum Outcome {
    Ok(Duration),
    Busy,
    Failed(String),
}

fn request(agent: &ureq::Agent, url: &str, body: &str) -> Outcome {
    let start = Instant::now();
    match agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
    {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .unwrap_or_default();
            match status {
                200 if text.contains("\"images\":[\"") => Outcome::Ok(start.elapsed()),
                503 => Outcome::Busy,
                _ => Outcome::Failed(format!(
                    "{status}: {}",
                    text.chars().take(200).collect::<String>()
                )),
            }
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Percentile `p` (0–100) of sorted `values`, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(gpu: &stipple::GpuOptions, args: &ServeBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients >= 1 && args.requests >= 1,
        "--clients and --requests must be at least 1"
    );
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    let mut command = Command::new(std::env::current_exe().context("locating the stipple binary")?);
    if let Some(backend) = &gpu.backend {
        command.args(["--backend", backend]);
    }
    if let Some(adapter) = &gpu.adapter {
        command.args(["--adapter", adapter]);
    }
    let mut child = command
        .arg("serve")
        .arg("-m")
        .arg(&model)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--queue",
            &args.queue.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting stipple serve")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let server = ServerChild(child);
    let pid = server.0.id();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let base = first
        .strip_prefix("listening on ")
        .with_context(|| format!("stipple serve did not start (first line {first:?})"))?
        .trim()
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    let url = format!("{base}/sdapi/v1/txt2img");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let body = |seed: usize| {
        serde_json::json!({
            "prompt": "a red apple on a table", "steps": args.steps, "width": args.size,
            "height": args.size, "seed": seed, "sampler_name": "Euler a",
        })
        .to_string()
    };
    // Warm-up: plans built, allocator pools filled.
    for seed in 0..4 {
        if let Outcome::Failed(e) = request(&agent, &url, &body(seed)) {
            anyhow::bail!("warm-up request failed: {e}");
        }
    }
    let rss_start = rss_bytes(pid);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let start = Instant::now();
    let outcomes: Vec<Vec<Outcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let (agent, url, body) = (&agent, &url, &body);
                scope.spawn(move || {
                    (0..args.requests)
                        .take_while(|_| Instant::now() < deadline)
                        .map(|i| request(agent, url, &body(1000 + c * args.requests + i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let rss_end = rss_bytes(pid);
    let mut latencies = Vec::new();
    let (mut busy, mut failed) = (0, Vec::new());
    for outcome in outcomes.into_iter().flatten() {
        match outcome {
            Outcome::Ok(d) => latencies.push(d.as_secs_f64() * 1000.0),
            Outcome::Busy => busy += 1,
            Outcome::Failed(e) => failed.push(e),
        }
    }
    latencies.sort_by(f64::total_cmp);
    let total = latencies.len() + busy + failed.len();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{} clients × {} requests ({}×{}, {} steps, queue {}), model {}",
        args.clients,
        args.requests,
        args.size,
        args.size,
        args.steps,
        args.queue,
        model.display()
    );
    println!(
        "{total} requests in {seconds:.1}s: {:.2} requests/s; latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len() as f64 / seconds,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "ok {}, 503 queue full {busy}, errors {}; server RSS {:.1} MiB at start, {:.1} MiB at end",
        latencies.len(),
        failed.len(),
        mib(rss_start),
        mib(rss_end)
    );
    for e in failed.iter().take(5) {
        eprintln!("  error: {e}");
    }
    let not_sent = args.clients * args.requests - total;
    anyhow::ensure!(
        not_sent == 0,
        "--max-seconds reached: {not_sent} requests not sent"
    );
    anyhow::ensure!(failed.is_empty(), "{} requests failed", failed.len());
    Ok(())
}
