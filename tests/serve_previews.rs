//! Live previews over HTTP (`stipple serve --previews`, tiny-pipe model on 127.0.0.1):
//! `/sdapi/v1/progress` carries `current_image`, a decodable PNG of the output size, while a
//! long job runs (linear projection, then a TAESD); A1111's `live_previews_enable` /
//! `show_progress_every_n_steps` options switch them. Every loop is bounded in count and time.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::server::{decode_png_base64, Client, ServerProcess};
use serde_json::{json, Value};

/// A job that runs long enough to be polled, then is interrupted: 24×16, 1000 steps.
fn long() -> Value {
    json!({
        "prompt": "a slow apple",
        "steps": 1000,
        "width": 24,
        "height": 16,
        "seed": 5,
        "sampler_name": "Euler",
    })
}

/// Polls progress (every 50 ms, at most 2400 times / 120 s) until it carries a preview.
fn poll_preview(client: &Client) -> Option<(Value, String)> {
    let start = Instant::now();
    for _ in 0..2400 {
        if start.elapsed() > Duration::from_secs(120) {
            break;
        }
        let progress = client.get("/sdapi/v1/progress").json();
        if let Some(image) = progress["current_image"].as_str() {
            return Some((progress.clone(), image.to_string()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs the long job, polls a preview out of it, interrupts it; returns the preview's PNG.
fn preview_of_long_job(client: &Client) -> common::server::Png {
    let background = client.clone();
    let job = std::thread::spawn(move || background.post("/sdapi/v1/txt2img", &long()));
    let found = poll_preview(client);
    client.post("/sdapi/v1/interrupt", &json!({}));
    let reply = job.join().unwrap();
    assert!(
        matches!(reply.status, 200 | 409),
        "{} {}",
        reply.status,
        reply.text
    );
    let (progress, image) = found.expect("no current_image within 120 s");
    assert!(progress["state"]["sampling_step"].as_u64().unwrap() >= 1);
    decode_png_base64(&image)
}

#[test]
fn progress_carries_live_previews() {
    let Some(server) =
        ServerProcess::start(&["--previews", "--preview-every", "1", "--max-steps", "1000"])
    else {
        return;
    };
    let client = Client::new(&server.url);
    let options = client.get("/sdapi/v1/options").json();
    assert_eq!(options["live_previews_enable"], true);
    assert_eq!(options["show_progress_every_n_steps"], 1);
    assert_eq!(
        client.get("/sdapi/v1/progress").json()["current_image"],
        Value::Null
    );

    let png = preview_of_long_job(&client);
    assert_eq!((png.width, png.height), (24, 16));
    assert_eq!(png.rgb.len(), 24 * 16 * 3);

    // A1111's options switch them off: a running job then carries none.
    let reply = client.post(
        "/sdapi/v1/options",
        &json!({"live_previews_enable": false, "show_progress_every_n_steps": 3}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let options = client.get("/sdapi/v1/options").json();
    assert_eq!(options["live_previews_enable"], false);
    assert_eq!(options["show_progress_every_n_steps"], 3);
    let background = client.clone();
    let job = std::thread::spawn(move || background.post("/sdapi/v1/txt2img", &long()));
    let start = Instant::now();
    let mut polls = 0;
    while polls < 40 && start.elapsed() < Duration::from_secs(120) {
        let progress = client.get("/sdapi/v1/progress").json();
        if progress["state"]["sampling_step"].as_u64().unwrap_or(0) >= 4 {
            assert_eq!(progress["current_image"], Value::Null, "previews are off");
            polls += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    client.post("/sdapi/v1/interrupt", &json!({}));
    job.join().unwrap();
    assert!(polls > 0, "the job never reached step 4");
    // A wrong type is a 4xx naming nothing partial.
    let reply = client.post("/sdapi/v1/options", &json!({"live_previews_enable": "yes"}));
    assert!((400..500).contains(&reply.status), "{}", reply.text);
}

#[test]
fn taesd_previews_over_http() {
    let taesd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/taesd/tiny");
    let taesd = taesd.display().to_string();
    let Some(server) = ServerProcess::start(&[
        "--previews",
        "--preview-every",
        "2",
        "--max-steps",
        "1000",
        "--taesd",
        &taesd,
    ]) else {
        return;
    };
    let client = Client::new(&server.url);
    let png = preview_of_long_job(&client);
    assert_eq!((png.width, png.height), (24, 16));
}
