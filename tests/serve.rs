//! `stipple serve` over real HTTP on 127.0.0.1 with the tiny-pipe model: the call sequences of
//! SillyTavern and Open WebUI (A1111 API), the OpenAI images API, hostile input (bad JSON,
//! wrong types, huge sizes and bodies, missing API key → clean 4xx JSON naming the field),
//! concurrency (16 parallel requests give the images of sequential runs), the bounded queue
//! (503 + Retry-After), cancellation on client disconnect, graceful SIGTERM, and flat memory
//! over 200 requests. Every loop is bounded in count and time.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::server::{
    decode_png, decode_png_base64, raw_read, raw_send, tiny_model, Client, ServerProcess,
};
use serde_json::{json, Value};

/// Small, fast requests: 16×16 pixels, 2 steps.
fn small(seed: i64) -> Value {
    json!({
        "prompt": "a red apple",
        "negative_prompt": "blurry",
        "steps": 2,
        "cfg_scale": 7.5,
        "width": 16,
        "height": 16,
        "seed": seed,
        "sampler_name": "Euler a",
    })
}

/// A request that runs for a long time (for interrupt, disconnect, queue and shutdown tests).
fn long(seed: i64) -> Value {
    json!({
        "prompt": "a slow apple",
        "steps": 1000,
        "width": 16,
        "height": 16,
        "seed": seed,
        "n_iter": 8,
        "sampler_name": "Euler",
    })
}

const LONG_ARGS: [&str; 2] = ["--max-steps", "1000"];

/// Polls `check` every 50 ms for up to `timeout`; true once it holds.
fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `/sdapi/v1/progress` once the running job has taken at least one step.
fn wait_for_running(client: &Client) -> Value {
    let mut last = Value::Null;
    let running = wait_until(Duration::from_secs(120), || {
        last = client.get("/sdapi/v1/progress").json();
        last["state"]["sampling_step"].as_u64().unwrap_or(0) >= 1
    });
    assert!(running, "the job never started: {last}");
    last
}

fn assert_error(reply: &common::server::Reply, status: u16, field: Option<&str>) -> Value {
    assert_eq!(reply.status, status, "{}", reply.text);
    let body = reply.json();
    if let Some(field) = field {
        let got = body["field"].as_str().or(body["error"]["param"].as_str());
        assert_eq!(got, Some(field), "{body}");
    }
    body
}

#[test]
fn sillytavern_and_open_webui_call_sequences() {
    // A second selectable model: tiny-pipe's components under another name.
    let scratch = std::env::temp_dir().join(format!("stipple-serve-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let other = scratch.join("tiny-pipe-b");
    std::fs::create_dir_all(&other).unwrap();
    let tiny = common::golden::fixture("tiny-pipe");
    for part in [
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "unet",
        "vae",
    ] {
        std::os::unix::fs::symlink(tiny.join(part), other.join(part)).unwrap();
    }
    let models_dir = scratch.display().to_string();
    let Some(server) =
        ServerProcess::start(&[LONG_ARGS.as_slice(), &["--models-dir", &models_dir]].concat())
    else {
        return;
    };
    let client = Client::new(&server.url);

    // Connection check and model list, as both clients do first.
    let options = client.get("/sdapi/v1/options").json();
    assert_eq!(options["sd_model_checkpoint"], "tiny-pipe");
    let models = client.get("/sdapi/v1/sd-models").json();
    let titles: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["tiny-pipe", "tiny-pipe-b"]);
    let samplers = client.get("/sdapi/v1/samplers").json();
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in [
        "Euler a",
        "Euler",
        "DDIM",
        "PLMS",
        "DPM++ 2M",
        "DPM++ 2M Karras",
        "LCM",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let schedulers = client.get("/sdapi/v1/schedulers").json();
    assert!(schedulers
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["label"] == "Karras"));
    for empty in ["upscalers", "sd-vae", "loras", "prompt-styles"] {
        assert_eq!(
            client.get(&format!("/sdapi/v1/{empty}")).json(),
            json!([]),
            "{empty}"
        );
    }

    // Selecting a model by its title, as SillyTavern does; an unknown one is a 422.
    let reply = client.post(
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "tiny-pipe"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = client.post("/sdapi/v1/options", &json!({"sd_model_checkpoint": "nope"}));
    assert_error(&reply, 422, Some("sd_model_checkpoint"));

    // txt2img: the PNG carries the infotext, which matches the CLI's text for the same
    // settings, and its pixels are the CLI's pixels.
    let reply = client.post("/sdapi/v1/txt2img", &small(42));
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["all_seeds"], json!([42]));
    assert_eq!(info["sampler_name"], "Euler a");
    assert_eq!(info["sd_model_name"], "tiny-pipe");
    assert_eq!(body["parameters"]["prompt"], "a red apple");
    let png = decode_png_base64(body["images"][0].as_str().unwrap());
    assert_eq!((png.width, png.height), (16, 16));
    let text = png.parameters.expect("parameters chunk");
    assert_eq!(text, info["infotexts"][0].as_str().unwrap());
    assert_eq!(
        text,
        "a red apple\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, CFG scale: 7.5, \
         Seed: 42, Size: 16x16, Model: tiny-pipe, Prediction type: epsilon"
    );
    let dir = std::env::temp_dir().join(format!("stipple-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("cli.png");
    let status = Command::new(env!("CARGO_BIN_EXE_stipple"))
        .args([
            "generate",
            "a red apple",
            "-n",
            "blurry",
            "-m",
            &tiny_model(),
        ])
        .args([
            "--steps", "2", "--cfg", "7.5", "--seed", "42", "-W", "16", "-H", "16",
        ])
        .args(["--scheduler", "euler-a", "-o"])
        .arg(&out)
        .status()
        .expect("run stipple generate");
    assert!(status.success());
    let cli = decode_png(&std::fs::read(&out).unwrap());
    assert_eq!(
        cli.rgb, png.rgb,
        "server and CLI images differ for the same settings"
    );
    // The CLI names the sampler by its short name; everything else is the same text.
    assert_eq!(
        cli.parameters
            .unwrap()
            .replace("Sampler: euler-a", "Sampler: Euler a"),
        text
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // Model switch through override_settings (same weights: same pixels, its own name),
    // leaving the selected model as it was.
    let mut request = small(42);
    request["override_settings"] = json!({"sd_model_checkpoint": "tiny-pipe-b"});
    let reply = client.post("/sdapi/v1/txt2img", &request);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let switched = reply.json();
    let info: Value = serde_json::from_str(switched["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["sd_model_name"], "tiny-pipe-b");
    let switched = decode_png_base64(switched["images"][0].as_str().unwrap());
    assert_eq!(switched.rgb, png.rgb);
    assert!(switched
        .parameters
        .unwrap()
        .contains("Model: tiny-pipe-b, "));
    assert_eq!(
        client.get("/sdapi/v1/options").json()["sd_model_checkpoint"],
        "tiny-pipe"
    );
    // And through /options, as the clients' model menus do.
    let reply = client.post(
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "tiny-pipe-b"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        client.get("/sdapi/v1/options").json()["sd_model_checkpoint"],
        "tiny-pipe-b"
    );
    assert_eq!(client.get("/health").json()["model"], "tiny-pipe-b");

    // img2img from the txt2img image, with the strength in the infotext.
    let reply = client.post(
        "/sdapi/v1/img2img",
        &json!({
            "prompt": "a green apple", "steps": 4, "seed": 7, "denoising_strength": 0.5,
            "init_images": [format!("data:image/png;base64,{}", body["images"][0].as_str().unwrap())],
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let img = reply.json();
    assert_eq!(img["parameters"]["init_images"], Value::Null);
    let png = decode_png_base64(img["images"][0].as_str().unwrap());
    assert_eq!((png.width, png.height), (16, 16));
    assert!(png.parameters.unwrap().contains("Denoising strength: 0.5"));

    // Progress polling while a long job runs, then interrupt: the job stops with a 409.
    let idle = client.get("/sdapi/v1/progress").json();
    assert_eq!(idle["progress"], 0.0);
    assert_eq!(idle["current_image"], Value::Null);
    let background = client.clone();
    let job = std::thread::spawn(move || background.post("/sdapi/v1/txt2img", &long(1)));
    let running = wait_for_running(&client);
    assert_eq!(running["state"]["sampling_steps"], 1000);
    assert!(running["progress"].as_f64().unwrap() > 0.0);
    assert!(running["eta_relative"].as_f64().unwrap() >= 0.0);
    let reply = client.post("/sdapi/v1/interrupt", &json!({}));
    assert_eq!(reply.status, 200);
    let reply = job.join().unwrap();
    assert_error(&reply, 409, None);
    assert!(wait_until(Duration::from_secs(10), || {
        client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0
    }));
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn openai_images_and_models() {
    let Some(server) = ServerProcess::start(&[]) else {
        return;
    };
    let client = Client::new(&server.url);
    let models = client.get("/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny-pipe");

    let request = json!({
        "model": "dall-e-2", "prompt": "a red apple", "n": 2, "size": "16x32",
        "response_format": "b64_json", "steps": 2, "seed": 5,
    });
    let reply = client.post("/v1/images/generations", &request);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let first = decode_png_base64(data[0]["b64_json"].as_str().unwrap());
    let second = decode_png_base64(data[1]["b64_json"].as_str().unwrap());
    assert_eq!((first.width, first.height), (16, 32));
    assert!(first.parameters.unwrap().contains("Seed: 5,"));
    assert!(second.parameters.unwrap().contains("Seed: 6,"));
    assert_ne!(first.rgb, second.rgb);

    let mut bad = request.clone();
    bad["response_format"] = json!("url");
    let body = assert_error(
        &client.post("/v1/images/generations", &bad),
        422,
        Some("response_format"),
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let mut bad = request.clone();
    bad["size"] = json!("huge");
    assert_error(
        &client.post("/v1/images/generations", &bad),
        422,
        Some("size"),
    );
    let mut bad = request.clone();
    bad["n"] = json!(1000);
    assert_error(&client.post("/v1/images/generations", &bad), 422, Some("n"));
    let mut bad = request;
    bad.as_object_mut().unwrap().remove("prompt");
    assert_error(
        &client.post("/v1/images/generations", &bad),
        422,
        Some("prompt"),
    );
}

#[test]
fn hostile_input_gets_clean_4xx() {
    let key = "test-key-123";
    let Some(server) = ServerProcess::start(&["--api-key", key, "--max-body-mib", "1"]) else {
        return;
    };
    let anonymous = Client::new(&server.url);
    // Health needs no key; everything else does.
    assert_eq!(anonymous.get("/health").status, 200);
    assert_error(&anonymous.post("/sdapi/v1/txt2img", &small(1)), 401, None);
    let body = assert_error(
        &anonymous.post("/v1/images/generations", &json!({"prompt": "x"})),
        401,
        None,
    );
    assert_eq!(body["error"]["type"], "authentication_error");
    let mut wrong = anonymous.clone();
    wrong.auth = Some("Bearer not-the-key".into());
    assert_error(&wrong.get("/sdapi/v1/options"), 401, None);
    let mut basic = anonymous.clone();
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("user:{key}"));
    basic.auth = Some(format!("Basic {credentials}"));
    assert_eq!(basic.get("/sdapi/v1/options").status, 200);
    let mut client = anonymous.clone();
    client.auth = Some(format!("Bearer {key}"));

    let post = |body: &[u8]| client.try_post("/sdapi/v1/txt2img", body).expect("POST");
    assert_error(&post(b"{\"prompt\": "), 400, None);
    assert_error(&post(b"not json"), 400, None);
    assert_error(&post(b"[1, 2, 3]"), 400, None);
    assert_error(&post(b""), 400, None);
    let cases: [(&str, Value, &str); 12] = [
        ("steps as a string", json!({"steps": "20"}), "steps"),
        ("negative steps", json!({"steps": -3}), "steps"),
        ("fractional width", json!({"width": 16.5}), "width"),
        ("prompt as a number", json!({"prompt": 5}), "prompt"),
        (
            "huge size",
            json!({"width": 100000, "height": 100000}),
            "width",
        ),
        ("zero steps", json!({"steps": 0}), "steps"),
        (
            "too many images",
            json!({"batch_size": 100, "n_iter": 100}),
            "batch_size",
        ),
        (
            "unknown sampler",
            json!({"sampler_name": "Heun++"}),
            "sampler_name",
        ),
        ("negative seed", json!({"seed": -5}), "seed"),
        (
            "size off the model's multiple",
            json!({"width": 17, "height": 16, "steps": 1}),
            "width",
        ),
        (
            "negative cfg",
            json!({"cfg_scale": -1.0, "width": 16, "height": 16, "steps": 1}),
            "cfg_scale",
        ),
        (
            "model override of the wrong type",
            json!({"override_settings": {"sd_model_checkpoint": 3}}),
            "override_settings.sd_model_checkpoint",
        ),
    ];
    for (what, body, field) in cases {
        let reply = client.post("/sdapi/v1/txt2img", &body);
        assert!(
            reply.status == 422,
            "{what}: {} {}",
            reply.status,
            reply.text
        );
        assert_error(&reply, 422, Some(field));
    }
    // Unknown fields are ignored.
    let mut request = small(3);
    request["restore_faces"] = json!(true);
    request["alwayson_scripts"] = json!({"x": {"args": []}});
    assert_eq!(client.post("/sdapi/v1/txt2img", &request).status, 200);

    // img2img without or with broken init images.
    assert_error(
        &client.post("/sdapi/v1/img2img", &json!({"prompt": "x"})),
        422,
        Some("init_images"),
    );
    let reply = client.post(
        "/sdapi/v1/img2img",
        &json!({"init_images": ["@@not base64@@"]}),
    );
    assert_error(&reply, 422, Some("init_images[0]"));
    let garbage = base64::engine::general_purpose::STANDARD.encode(b"GIF89a not an image");
    let reply = client.post("/sdapi/v1/img2img", &json!({"init_images": ["", garbage]}));
    assert_error(&reply, 422, Some("init_images[0]"));
    let reply = client.post(
        "/sdapi/v1/img2img",
        &json!({"init_images": ["x"], "denoising_strength": 1.5}),
    );
    assert_error(&reply, 422, Some("denoising_strength"));

    // A body over --max-body-mib (1 MiB): 413 from its Content-Length, before it is sent.
    let head = format!(
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        3 << 20
    );
    let (status, body) = raw_read(raw_send(&client.base, &head, b"{\"prompt\": \""));
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON 413");
    assert!(
        body["detail"].as_str().unwrap().contains("--max-body-mib"),
        "{body}"
    );
    // Without a Content-Length (chunked), the body is cut off at the limit.
    let head = format!(
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "a".repeat(1 << 20));
    let mut chunks = chunk.repeat(2).into_bytes();
    chunks.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_read(raw_send(&client.base, &head, &chunks));
    assert_eq!(status, 413, "{body}");
    // Unknown routes are JSON 404s.
    assert_error(&client.get("/sdapi/v1/nothing-here"), 404, None);
    // The server survived all of it.
    assert_eq!(client.post("/sdapi/v1/txt2img", &small(4)).status, 200);
}

#[test]
fn concurrent_requests_match_sequential_runs() {
    let Some(server) = ServerProcess::start(&["--queue", "16"]) else {
        return;
    };
    let client = Client::new(&server.url);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || client.post("/sdapi/v1/txt2img", &small(100 + i)))
        })
        .collect();
    let concurrent: Vec<String> = threads
        .into_iter()
        .map(|t| {
            let reply = t.join().unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply.json()["images"][0].as_str().unwrap().to_string()
        })
        .collect();
    for (i, image) in concurrent.iter().enumerate() {
        let reply = client.post("/sdapi/v1/txt2img", &small(100 + i as i64));
        assert_eq!(
            reply.json()["images"][0].as_str().unwrap(),
            image,
            "seed {}: concurrent and sequential PNGs differ",
            100 + i
        );
    }
    // Different seeds give different images.
    assert_ne!(concurrent[0], concurrent[1]);
}

#[test]
fn full_queue_answers_503_with_retry_after() {
    let Some(server) = ServerProcess::start(&[LONG_ARGS.as_slice(), &["--queue", "1"]].concat())
    else {
        return;
    };
    let client = Client::new(&server.url);
    let running = {
        let c = client.clone();
        std::thread::spawn(move || c.post("/sdapi/v1/txt2img", &long(1)))
    };
    wait_for_running(&client);
    let queued = {
        let c = client.clone();
        std::thread::spawn(move || c.post("/sdapi/v1/txt2img", &long(2)))
    };
    assert!(wait_until(Duration::from_secs(30), || {
        client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 2
    }));
    let reply = client.post("/sdapi/v1/txt2img", &small(3));
    assert_error(&reply, 503, None);
    assert_eq!(reply.retry_after.as_deref(), Some("5"));
    // Interrupt both long jobs (the queued one once it runs).
    let mut replies = Vec::new();
    for job in [running, queued] {
        let start = Instant::now();
        while !job.is_finished() && start.elapsed() < Duration::from_secs(120) {
            client.post("/sdapi/v1/interrupt", &json!({}));
            std::thread::sleep(Duration::from_millis(100));
        }
        replies.push(job.join().unwrap());
    }
    for reply in replies {
        assert!(matches!(reply.status, 200 | 409), "{}", reply.text);
    }
    assert_eq!(client.post("/sdapi/v1/txt2img", &small(3)).status, 200);
}

#[test]
fn client_disconnect_cancels_the_job() {
    let Some(server) = ServerProcess::start(&LONG_ARGS) else {
        return;
    };
    let client = Client::new(&server.url);
    let started = Instant::now();
    let request = long(9).to_string();
    let head = format!(
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        request.len()
    );
    let connection = raw_send(&server.url, &head, request.as_bytes());
    wait_for_running(&client);
    let progress = client.get("/sdapi/v1/progress").json()["progress"]
        .as_f64()
        .unwrap();
    drop(connection); // the client goes away mid-job
    let at_disconnect = Instant::now();
    assert!(progress > 0.0 && progress < 0.5, "progress {progress}");
    // The whole job would need elapsed × (1 − p) / p more; cancelled, it stops within a step.
    let remaining = started.elapsed().as_secs_f64() * (1.0 - progress) / progress;
    assert!(wait_until(Duration::from_secs(60), || {
        client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0
    }));
    let took = at_disconnect.elapsed().as_secs_f64();
    assert!(
        took < remaining / 2.0,
        "the job went on after the disconnect: idle after {took:.1}s, {remaining:.1}s were left"
    );
    assert_eq!(client.post("/sdapi/v1/txt2img", &small(1)).status, 200);
}

#[test]
fn sigterm_cancels_the_running_job_and_exits_cleanly() {
    let Some(mut server) = ServerProcess::start(&LONG_ARGS) else {
        return;
    };
    let client = Client::new(&server.url);
    let job = {
        let c = client.clone();
        std::thread::spawn(move || c.post("/sdapi/v1/txt2img", &long(1)))
    };
    wait_for_running(&client);
    server.signal("TERM");
    let reply = job.join().unwrap();
    assert_error(&reply, 503, None);
    let status = server
        .wait(Duration::from_secs(60))
        .expect("server still running after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn memory_stays_flat_over_200_requests() {
    let Some(server) = ServerProcess::start(&[]) else {
        return;
    };
    let client = Client::new(&server.url);
    let run = |from: i64, count: i64| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let client = client.clone();
                std::thread::spawn(move || {
                    for i in (from + t..from + count).step_by(4) {
                        let reply = client.post("/sdapi/v1/txt2img", &small(i));
                        assert_eq!(reply.status, 200, "{}", reply.text);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    };
    run(0, 40); // warm-up: plans, allocator pools
    let warm = server.rss_bytes();
    run(40, 200);
    let end = server.rss_bytes();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "server RSS after 40 requests {:.1} MiB, after 240 {:.1} MiB",
        mib(warm),
        mib(end)
    );
    assert!(
        end < warm + (24 << 20),
        "RSS grew from {:.1} to {:.1} MiB over 200 requests",
        mib(warm),
        mib(end)
    );
}
