//! The fetched model files, from a JS `Map` to the library's in-memory folder.

use stipple::files::MemoryFolder;
use wasm_bindgen::JsCast;

/// `Map<string, Uint8Array>` (paths relative to the model folder) → an in-memory folder. Errors
/// name the entry that is not a string path with `Uint8Array` contents.
pub fn model_folder(map: &js_sys::Map) -> Result<MemoryFolder, String> {
    let mut files = MemoryFolder::new();
    let mut error = None;
    map.for_each(&mut |value, key| {
        if error.is_some() {
            return;
        }
        let Some(path) = key.as_string() else {
            error = Some(format!("model file key {key:?} is not a string path"));
            return;
        };
        match value.dyn_into::<js_sys::Uint8Array>() {
            Ok(bytes) => {
                files.insert(path, bytes.to_vec());
            }
            Err(_) => error = Some(format!("model file {path}: contents are not a Uint8Array")),
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(files),
    }
}
