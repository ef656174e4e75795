// An app that embeds stipple: one worker thread owns the pipeline (a `Pipeline` is `Send`, and
// one GPU runs one generation at a time), the rest of the app sends it requests over a channel
// and gets each answer on the reply channel that came with the request.
//
//     cargo run --release --example embed_thread -- "a red apple" "a green pear"
//
// Writes embed-0.png, embed-1.png, … (one per prompt) with the default model in weights/.
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use stipple::pipeline::{GenerateOptions, GenerateOutput, Pipeline, Progress};
use stipple::{Gpu, GpuOptions};

/// One job for the worker, with the channel its result goes back on.
pub struct Request {
    pub options: GenerateOptions,
    pub reply: mpsc::Sender<stipple::Result<GenerateOutput>>,
}

/// Loads `model` on a new thread and serves requests until every sender is dropped. Loading
/// errors come back on the first request's reply.
pub fn spawn_worker(model: PathBuf) -> (mpsc::Sender<Request>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Request>();
    let worker = thread::spawn(move || {
        let loaded =
            Gpu::new(&GpuOptions::from_env()).and_then(|gpu| Pipeline::load(&gpu, &model, None));
        let mut pipeline = match loaded {
            Ok(p) => p,
            Err(e) => {
                let message = e.to_string();
                for request in rx {
                    let error = stipple::Error::invalid("model", message.clone());
                    let _ = request.reply.send(Err(error));
                }
                return;
            }
        };
        for request in rx {
            let result = pipeline.generate(&request.options, |_, _| Progress::Continue);
            let _ = request.reply.send(result); // the requester may have gone: nothing to do
        }
    });
    (tx, worker)
}

/// Asks the worker for one image and waits for it.
pub fn request(
    worker: &mpsc::Sender<Request>,
    options: GenerateOptions,
) -> stipple::Result<GenerateOutput> {
    let (reply, answer) = mpsc::channel();
    let gone = || stipple::Error::invalid("worker", "the worker thread has stopped");
    worker
        .send(Request { options, reply })
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

fn main() -> stipple::Result<()> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/stipple-emoji-64");
    let (worker, handle) = spawn_worker(model);
    let mut prompts: Vec<String> = std::env::args().skip(1).collect();
    if prompts.is_empty() {
        prompts = vec![
            "an emoji of a red apple".into(),
            "an emoji of a green pear".into(),
        ];
    }
    // Requests from several threads of the app; the worker runs them one after another.
    let threads: Vec<_> = prompts
        .into_iter()
        .enumerate()
        .map(|(i, prompt)| {
            let worker = worker.clone();
            thread::spawn(move || {
                let options = GenerateOptions {
                    prompt,
                    steps: 20,
                    seed: i as u64,
                    ..Default::default()
                };
                let out = request(&worker, options)?;
                let path = PathBuf::from(format!("embed-{i}.png"));
                out.save_png(0, &path)?;
                Ok::<_, stipple::Error>(path)
            })
        })
        .collect();
    drop(worker); // the worker stops once the request threads are done with their senders
    for t in threads {
        let path = t.join().expect("request thread")?;
        println!("{}", path.display());
    }
    handle.join().expect("worker thread");
    Ok(())
}
