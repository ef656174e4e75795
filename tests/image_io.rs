//! `stipple::image_io` and `stipple::output_file`: PNG with A1111 parameters, atomic writes and
//! their failure modes, image input, f32 safetensors files, float → pixel conversion.
//! No GPU needed.

use std::fs;
use std::path::{Path, PathBuf};

use stipple::image_io::{
    a1111_parameters, float_image_to_rgb8, read_image_rgb, read_tensor_safetensors, to_unit_range,
    write_png, write_tensor_safetensors, A1111Parameters,
};
use stipple::output_file::{
    write_output as write_atomic, write_output_bytes as write_atomic_bytes,
};
use stipple::Error;

/// A fresh empty directory in the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("stipple-image-io-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    /// File names in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A small (H, W, 3) test pattern with every channel distinct.
fn pattern(width: u32, height: u32) -> Vec<u8> {
    (0..width * height * 3)
        .map(|i| (i * 37 % 256) as u8)
        .collect()
}

/// Text chunks of a PNG: (keyword, text, was iTXt).
fn png_texts(path: &Path) -> Vec<(String, String, bool)> {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    reader.finish().unwrap();
    let info = reader.info();
    let mut out: Vec<(String, String, bool)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone(), false))
        .collect();
    for c in &info.utf8_text {
        out.push((c.keyword.clone(), c.get_text().unwrap(), true));
    }
    out
}

fn sample_parameters() -> A1111Parameters {
    A1111Parameters {
        prompt: "a photo of a cat".into(),
        negative_prompt: "blurry".into(),
        steps: 20,
        sampler: "Euler a".into(),
        cfg_scale: 7.5,
        seed: 42,
        width: 512,
        height: 512,
        model: "tiny-sd1".into(),
        ..Default::default()
    }
}

#[test]
fn a1111_parameters_layout() {
    let p = sample_parameters();
    assert_eq!(
        a1111_parameters(&p),
        "a photo of a cat\nNegative prompt: blurry\n\
         Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: tiny-sd1"
    );
    // No negative prompt line when empty; integral CFG without ".0"; img2img strength and
    // extra fields after the model; values with ',' ':' or newlines quoted as JSON.
    let p = A1111Parameters {
        negative_prompt: String::new(),
        cfg_scale: 7.0,
        seed: 4_294_967_295,
        width: 768,
        height: 512,
        model: "my model, v2".into(),
        denoising_strength: Some(0.75),
        extra: vec![("Version".into(), "stipple 0.1.0".into())],
        ..sample_parameters()
    };
    assert_eq!(
        a1111_parameters(&p),
        "a photo of a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 4294967295, \
         Size: 768x512, Model: \"my model, v2\", Denoising strength: 0.75, Version: stipple 0.1.0"
    );
    // Surrounding whitespace trimmed (A1111's .strip()); an empty prompt starts with the params.
    let p = A1111Parameters {
        prompt: String::new(),
        negative_prompt: String::new(),
        model: String::new(),
        ..sample_parameters()
    };
    assert_eq!(
        a1111_parameters(&p),
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512"
    );
}

#[test]
fn png_round_trip_keeps_pixels_and_parameters() {
    let dir = TempDir::new("roundtrip");
    let (w, h) = (13u32, 7u32);
    let rgb = pattern(w, h);
    let text = a1111_parameters(&sample_parameters());
    let path = dir.path().join("out.png");
    write_png(&path, w, h, &rgb, Some(&text)).unwrap();

    // Pixels, through the `image` decoder used by read_image_rgb.
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), (w, h));
    assert_eq!(img.color(), image::ColorType::Rgb8);
    assert_eq!(img.to_rgb8().into_raw(), rgb);
    // The parameters text, exactly, in a tEXt chunk.
    assert_eq!(
        png_texts(&path),
        vec![("parameters".to_string(), text.clone(), false)]
    );
    // Only the target is left in the directory: no temporary file.
    assert_eq!(dir.listing(), vec!["out.png"]);

    // img2img input: [-1, 1] the way diffusers computes it.
    let (rw, rh, values) = read_image_rgb(&path).unwrap();
    assert_eq!((rw, rh), (w, h));
    let want: Vec<f32> = rgb
        .iter()
        .map(|&b| 2.0 * (b as f32 / 255.0) - 1.0)
        .collect();
    assert_eq!(values, want);
    assert_eq!(values[0], -1.0); // pattern starts with 0
}

#[test]
fn png_without_parameters_and_with_non_latin1_text() {
    let dir = TempDir::new("text");
    let rgb = pattern(4, 3);
    let plain = dir.path().join("plain.png");
    write_png(&plain, 4, 3, &rgb, None).unwrap();
    assert!(png_texts(&plain).is_empty());

    // Latin-1 stays tEXt; anything else goes to iTXt (UTF-8), as PIL does for A1111.
    let latin = dir.path().join("latin.png");
    write_png(&latin, 4, 3, &rgb, Some("crème brûlée\nSteps: 1")).unwrap();
    assert_eq!(
        png_texts(&latin),
        vec![("parameters".into(), "crème brûlée\nSteps: 1".into(), false)]
    );
    let utf8 = dir.path().join("utf8.png");
    write_png(&utf8, 4, 3, &rgb, Some("猫の写真 🐱\nSteps: 1")).unwrap();
    assert_eq!(
        png_texts(&utf8),
        vec![("parameters".into(), "猫の写真 🐱\nSteps: 1".into(), true)]
    );
}

#[test]
fn png_overwrites_an_existing_file_atomically() {
    let dir = TempDir::new("overwrite");
    let path = dir.path().join("img.png");
    fs::write(&path, b"old content").unwrap();
    write_png(&path, 2, 2, &pattern(2, 2), Some("x")).unwrap();
    assert_eq!(
        image::open(&path).unwrap().to_rgb8().into_raw(),
        pattern(2, 2)
    );
    assert_eq!(dir.listing(), vec!["img.png"]);
}

#[test]
fn writing_into_a_missing_directory_fails_naming_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("no/such/dir/out.png");
    let err = write_png(&path, 2, 2, &pattern(2, 2), Some("p")).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("no/such/dir/out.png"), "{err}");
    assert!(dir.listing().is_empty(), "{:?}", dir.listing());

    let err = write_tensor_safetensors(&path.with_extension("safetensors"), "x", &[1], &[1.0])
        .unwrap_err();
    assert!(err.to_string().contains("out.safetensors"), "{err}");
    assert!(dir.listing().is_empty());
}

#[test]
fn writing_over_a_directory_fails_cleanly() {
    let dir = TempDir::new("isdir");
    let target = dir.path().join("out.png");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep.txt"), b"keep").unwrap();
    let err = write_png(&target, 2, 2, &pattern(2, 2), None).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path: p, .. } if p == &target),
        "{err:?}"
    );
    assert!(err.to_string().contains("out.png"), "{err}");
    // The directory is untouched and no temporary file is left beside it.
    assert_eq!(dir.listing(), vec!["out.png"]);
    assert_eq!(fs::read(target.join("keep.txt")).unwrap(), b"keep");
}

#[test]
fn bad_dimensions_are_an_invalid_argument_and_write_nothing() {
    let dir = TempDir::new("dims");
    let path = dir.path().join("x.png");
    for (w, h, len) in [
        (2u32, 2u32, 11usize),
        (0, 2, 0),
        (2, 0, 0),
        (u32::MAX, u32::MAX, 3),
    ] {
        let err = write_png(&path, w, h, &vec![0; len], None).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert!(err.to_string().contains("x.png"), "{err}");
    }
    assert!(dir.listing().is_empty());
}

#[test]
fn a_failing_writer_leaves_no_temporary_file() {
    let dir = TempDir::new("failwriter");
    let path = dir.path().join("f.bin");
    let err = write_atomic(&path, |_w| Err(Error::invalid("test", "boom"))).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(dir.listing().is_empty());
    // A panicking writer cleans up too.
    let result = std::panic::catch_unwind(|| {
        let _ = write_atomic(&path, |_w| panic!("writer panicked"));
    });
    assert!(result.is_err());
    assert!(dir.listing().is_empty());
    // And a plain byte write works, replacing nothing but the target.
    write_atomic_bytes(&path, b"hello").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"hello");
    assert_eq!(dir.listing(), vec!["f.bin"]);
    // A path with no file name is an invalid argument.
    assert!(matches!(
        write_atomic_bytes(Path::new("/"), b"x"),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn garbage_or_missing_image_input_names_the_file() {
    let dir = TempDir::new("garbage");
    let garbage = dir.path().join("garbage.png");
    fs::write(&garbage, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let err = read_image_rgb(&garbage).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &garbage),
        "{err:?}"
    );
    assert!(err.to_string().contains("garbage.png"), "{err}");

    let text = dir.path().join("notes.png");
    fs::write(&text, b"hello world, definitely text").unwrap();
    let err = read_image_rgb(&text).unwrap_err();
    assert!(err.to_string().contains("notes.png"), "{err}");

    // A truncated real PNG.
    let good = dir.path().join("good.png");
    write_png(&good, 8, 8, &pattern(8, 8), None).unwrap();
    let bytes = fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.png");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_image_rgb(&truncated).unwrap_err();
    assert!(err.to_string().contains("truncated.png"), "{err}");

    let missing = dir.path().join("missing.png");
    let err = read_image_rgb(&missing).unwrap_err();
    match &err {
        Error::Io { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn image_input_accepts_any_png_colour_type() {
    let dir = TempDir::new("colour");
    // Grey: replicated to RGB.
    let grey = dir.path().join("grey.png");
    image::GrayImage::from_raw(2, 1, vec![0, 255])
        .unwrap()
        .save(&grey)
        .unwrap();
    let (w, h, v) = read_image_rgb(&grey).unwrap();
    assert_eq!((w, h), (2, 1));
    assert_eq!(v, vec![-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]);
    // RGBA: alpha dropped.
    let rgba = dir.path().join("rgba.png");
    image::RgbaImage::from_raw(1, 1, vec![255, 0, 51, 7])
        .unwrap()
        .save(&rgba)
        .unwrap();
    let (_, _, v) = read_image_rgb(&rgba).unwrap();
    assert_eq!(v, vec![1.0, -1.0, 2.0 * (51.0f32 / 255.0) - 1.0]);
    // 16-bit RGB: scaled to 8 bits.
    let rgb16 = dir.path().join("rgb16.png");
    image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(1, 1, vec![65535u16, 0, 65535])
        .unwrap()
        .save(&rgb16)
        .unwrap();
    let (_, _, v) = read_image_rgb(&rgb16).unwrap();
    assert_eq!(v, vec![1.0, -1.0, 1.0]);
}

#[test]
fn safetensors_round_trip_and_valid_format() {
    let dir = TempDir::new("st");
    let path = dir.path().join("latents.safetensors");
    let shape = [1usize, 4, 3, 5];
    let data: Vec<f32> = (0..60).map(|i| i as f32 * 0.25 - 7.0).collect();
    write_tensor_safetensors(&path, "latents", &shape, &data).unwrap();
    assert_eq!(dir.listing(), vec!["latents.safetensors"]);

    // Header length is a multiple of 8 and the data follows it.
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    assert_eq!(bytes.len(), 8 + n + 60 * 4);

    // The reference implementation accepts it.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("latents").unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    assert_eq!(view.shape(), &shape);
    let back: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(back, data);

    // And our reader.
    let (s, d) = read_tensor_safetensors(&path, "latents").unwrap();
    assert_eq!(s, shape);
    assert_eq!(d, data);

    // Names needing JSON escaping, a scalar and an empty tensor.
    let odd = dir.path().join("odd.safetensors");
    write_tensor_safetensors(&odd, "a \"quoted\" name", &[], &[3.5]).unwrap();
    let bytes = fs::read(&odd).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("a \"quoted\" name").unwrap().shape(),
        &[] as &[usize]
    );
    let empty = dir.path().join("empty.safetensors");
    write_tensor_safetensors(&empty, "e", &[0, 3], &[]).unwrap();
    let bytes = fs::read(&empty).unwrap();
    assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());
}

#[test]
fn safetensors_errors_name_file_and_tensor() {
    let dir = TempDir::new("sterr");
    let path = dir.path().join("t.safetensors");
    let err = write_tensor_safetensors(&path, "x", &[2, 3], &[0.0; 5]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert!(err.to_string().contains("t.safetensors"), "{err}");
    assert!(write_tensor_safetensors(&path, "", &[1], &[0.0]).is_err());
    assert!(write_tensor_safetensors(&path, "__metadata__", &[1], &[0.0]).is_err());
    assert!(dir.listing().is_empty());

    write_tensor_safetensors(&path, "x", &[2], &[1.0, 2.0]).unwrap();
    let err = read_tensor_safetensors(&path, "y").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("t.safetensors") && msg.contains('y'), "{msg}");

    let garbage = dir.path().join("garbage.safetensors");
    fs::write(&garbage, b"not a safetensors file at all").unwrap();
    let err = read_tensor_safetensors(&garbage, "x").unwrap_err();
    assert!(err.to_string().contains("garbage.safetensors"), "{err}");
}

#[test]
fn float_to_rgb8_matches_diffusers() {
    // (x * 0.5 + 0.5).clamp(0, 1) * 255, numpy round (half to even), uint8.
    let cases: [(f32, u8); 13] = [
        (-1.0, 0),
        (1.0, 255),
        (0.0, 128),                   // 127.5 -> 128 (even)
        (0.5, 191),                   // 191.25
        (-0.5, 64),                   // 63.75
        (1.0 - 257.0 / 65536.0, 254), // exactly 254.5 in f32 -> 254 (even), not 255
        (2.0, 255),
        (-3.0, 0),
        (f32::INFINITY, 255),
        (f32::NEG_INFINITY, 0),
        (f32::NAN, 0),
        (-0.0, 128),
        (1.0 - 2.0 / 255.0, 254),
    ];
    let input: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let want: Vec<u8> = cases.iter().map(|c| c.1).collect();
    assert_eq!(float_image_to_rgb8(&input), want);

    let unit = to_unit_range(&[-1.0, 1.0, 0.0, 0.5, 3.0, -2.0, f32::NAN]);
    assert_eq!(&unit[..6], &[0.0, 1.0, 0.5, 0.75, 1.0, 0.0]);
    assert!(unit[6].is_nan());

    // Pixels read back from a PNG convert back to the same bytes.
    let bytes: Vec<u8> = (0..=255).collect();
    let values: Vec<f32> = bytes
        .iter()
        .map(|&b| 2.0 * (b as f32 / 255.0) - 1.0)
        .collect();
    assert_eq!(float_image_to_rgb8(&values), bytes);
}
