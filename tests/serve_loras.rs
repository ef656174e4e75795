//! `stipple serve --lora-dir DIR` over real HTTP with the tiny-pipe model: `/sdapi/v1/loras`
//! lists the folder's files, a prompt's `<lora:NAME:MULTIPLIER>` tag gives the CLI's image with
//! `--lora FILE:MULTIPLIER` (pixel for pixel), the next request without a tag gives the base
//! model's image again, and an unknown name or a bad tag is a 422 naming `prompt`.

mod common;

use std::process::Command;

use common::server::{decode_png, decode_png_base64, tiny_model, Client, ServerProcess};
use serde_json::{json, Value};

fn request(prompt: &str) -> Value {
    json!({
        "prompt": prompt,
        "steps": 2,
        "cfg_scale": 7.5,
        "width": 24,
        "height": 16,
        "seed": 7,
        "sampler_name": "Euler a",
    })
}

fn image(client: &Client, prompt: &str) -> (Vec<u8>, String) {
    let reply = client.post("/sdapi/v1/txt2img", &request(prompt));
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let png = decode_png_base64(body["images"][0].as_str().unwrap());
    (png.rgb, png.parameters.expect("parameters chunk"))
}

fn cli_image(dir: &std::path::Path, lora: Option<&str>) -> Vec<u8> {
    let out = dir.join(format!("cli-{}.png", lora.is_some()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stipple"));
    cmd.args(["generate", "a red apple", "-m", &tiny_model()])
        .args([
            "--steps", "2", "--cfg", "7.5", "--seed", "7", "-W", "24", "-H", "16",
        ])
        .args(["--scheduler", "euler-a", "-o"])
        .arg(&out);
    if let Some(lora) = lora {
        cmd.args(["--lora", lora]);
    }
    assert!(cmd.status().expect("run stipple generate").success());
    decode_png(&std::fs::read(&out).unwrap()).rgb
}

#[test]
fn prompt_tags_apply_loras_from_lora_dir() {
    let dir = std::env::temp_dir().join(format!("stipple-serve-loras-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lora/kohya_sd1.safetensors");
    std::fs::copy(&fixture, dir.join("kohya_sd1.safetensors")).unwrap();
    let Some(server) = ServerProcess::start(&["--lora-dir", dir.to_str().unwrap()]) else {
        return;
    };
    let client = Client::new(&server.url);

    let list = client.get("/sdapi/v1/loras").json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "kohya_sd1");

    let (with_lora, text) = image(&client, "a red apple <lora:kohya_sd1:0.8>");
    assert!(
        text.starts_with("a red apple <lora:kohya_sd1:0.8>\n"),
        "{text}"
    );
    let (base, _) = image(&client, "a red apple");
    assert_ne!(with_lora, base, "the LoRA changed nothing");
    let lora_arg = format!("{}:0.8", dir.join("kohya_sd1.safetensors").display());
    assert_eq!(
        with_lora,
        cli_image(&dir, Some(&lora_arg)),
        "server vs CLI with the LoRA"
    );
    assert_eq!(
        base,
        cli_image(&dir, None),
        "base image after the LoRA was removed"
    );

    for bad in ["a <lora:missing:1>", "a <lora:kohya_sd1:x>"] {
        let reply = client.post("/sdapi/v1/txt2img", &request(bad));
        assert_eq!(reply.status, 422, "{bad}: {}", reply.text);
        assert!(reply.text.contains("prompt"), "{bad}: {}", reply.text);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
