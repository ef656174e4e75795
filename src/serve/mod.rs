//! `stipple serve`: an HTTP server that AUTOMATIC1111 clients (`/sdapi/v1`, e.g. SillyTavern,
//! Open WebUI) and OpenAI images clients (`/v1/images/generations`) use unchanged.
//!
//! ```text
//! clients ──HTTP (axum on tokio)──▶ handlers: parse, check limits ──▶ bounded FIFO (--queue)
//!                                                                         │ full → 503 + Retry-After
//!   base64 PNG + infotext ◀── encode (blocking pool) ◀── GPU worker thread: owns the Pipeline,
//!                                                       one job at a time, cancel between steps
//! ```
//!
//! The server keeps no per-client state (no files, no sessions), so N of them — one per GPU or
//! machine — scale behind any load balancer that checks `GET /health` (docs/serve/nginx.conf).
//! SIGINT/SIGTERM: `/health` turns 503, new requests get 503, the running job is cancelled
//! between steps and its client answered 503; the process exits once every response is sent.

pub mod a1111;
pub mod api_error;
pub mod auth;
pub mod body;
pub mod generation;
pub mod images;
pub mod inpaint;
pub mod limits;
pub mod loras;
pub mod models;
pub mod openai;
pub mod queue;
pub mod samplers;
pub mod status;
pub mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub use api_error::ApiError;
pub use limits::Limits;
pub use models::{ModelCatalog, ModelEntry};

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuOptions};
use queue::JobQueue;
use status::Status;

/// Everything `stipple serve` is configured with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on; `127.0.0.1` keeps the server local.
    pub host: String,
    /// 0 = any free port (printed at startup).
    pub port: u16,
    /// The default model (diffusers folder).
    pub model: PathBuf,
    /// More models, one diffusers folder each, selectable by `sd_model_checkpoint`.
    pub models_dir: Option<PathBuf>,
    pub dtype: Option<DType>,
    pub gpu: GpuOptions,
    /// Jobs that may wait behind the running one.
    pub queue: usize,
    pub api_key: Option<String>,
    /// `Access-Control-Allow-Origin` value (`*` for any); None = no CORS headers.
    pub cors: Option<String>,
    pub limits: Limits,
    /// Live previews in `/sdapi/v1/progress` at start (clients may switch them).
    pub live_previews: status::LivePreviews,
    /// A TAESD folder for the previews (else the latent→RGB projection).
    pub taesd: Option<PathBuf>,
    /// LoRA files that prompts may name with `<lora:NAME:MULTIPLIER>` ([`loras`]).
    pub lora_dir: Option<PathBuf>,
}

/// What every handler shares.
pub struct AppState {
    pub queue: JobQueue,
    pub status: Arc<Status>,
    pub catalog: ModelCatalog,
    /// LoRA files from `--lora-dir`.
    pub loras: loras::LoraCatalog,
    pub limits: Limits,
    /// The adapter's name, for `/health`.
    pub adapter: String,
}

impl AppState {
    /// The catalog name of a model a client asks for, or a 422 naming `field`.
    pub fn model_named(&self, requested: &str, field: &str) -> Result<String, ApiError> {
        self.catalog
            .find(requested)
            .map(|m| m.name.clone())
            .ok_or_else(|| {
                ApiError::field(
                    field,
                    format!(
                        "unknown model {requested:?}; available: {:?}",
                        self.catalog.names()
                    ),
                )
            })
    }
}

/// `GET /health`: 200 while the server takes work, 503 once it shuts down (load balancers then
/// send requests elsewhere). Never needs the API key.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = &state.status;
    let loaded = status.loaded_model();
    let ok = !status.is_shutting_down();
    let body = json!({
        "status": if ok { "ok" } else { "shutting down" },
        "model": loaded,
        "selected_model": status.selected_model(),
        "busy": status.busy(),
        "queued": status.waiting.load(Ordering::SeqCst),
        "adapter": state.adapter,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Unknown routes: a JSON 404 naming the path.
async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route {}", uri.path()))
}

/// The router with its layers: body limit, API key, CORS.
fn router(state: Arc<AppState>, config: &ServeConfig) -> Result<Router> {
    let mut app = Router::new()
        .route("/health", get(health))
        .merge(a1111::routes())
        .merge(openai::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            config.limits.max_body_bytes,
            limits::reject_large_bodies,
        ))
        .with_state(state);
    if let Some(key) = &config.api_key {
        let key: Arc<str> = Arc::from(key.as_str());
        app = app.layer(axum::middleware::from_fn_with_state(key, auth::require_key));
    }
    if let Some(origin) = &config.cors {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let allow = if origin == "*" {
            AllowOrigin::any()
        } else {
            let value = HeaderValue::from_str(origin).map_err(|_| {
                Error::invalid("--cors", format!("{origin:?} is not a valid origin"))
            })?;
            AllowOrigin::exact(value)
        };
        let cors = CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ]);
        app = app.layer(cors);
    }
    Ok(app)
}

/// A started server: its address and the handles to stop it.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub adapter: String,
    pub catalog: ModelCatalog,
    listener: tokio::net::TcpListener,
    app: Router,
    status: Arc<Status>,
    worker: std::thread::JoinHandle<()>,
}

impl Server {
    /// Loads the default model on a new GPU worker and binds the address (call inside a tokio
    /// runtime). Fails with the model's or the address's error before anything is served.
    pub async fn bind(config: &ServeConfig) -> Result<Server> {
        if config.queue == 0 {
            return Err(Error::invalid("--queue", "must be at least 1"));
        }
        let catalog = ModelCatalog::scan(&config.model, config.models_dir.as_deref())?;
        let loras = loras::LoraCatalog::scan(config.lora_dir.as_deref())?;
        let status = Arc::new(Status::new(catalog.default_model().name.clone()));
        status.set_live_previews(config.live_previews);
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue);
        let worker_config = worker::WorkerConfig {
            gpu: config.gpu.clone(),
            dtype: config.dtype,
            catalog: catalog.clone(),
            taesd: config.taesd.clone(),
        };
        let spawn_status = status.clone();
        let (worker, adapter) =
            tokio::task::spawn_blocking(move || worker::spawn(worker_config, rx, spawn_status))
                .await
                .map_err(|e| Error::invalid("GPU worker", e.to_string()))??;
        let address = format!("{}:{}", config.host, config.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| Error::invalid("listen address", format!("{address}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::invalid("listen address", format!("{address}: {e}")))?;
        let state = Arc::new(AppState {
            queue: JobQueue::new(tx, status.clone()),
            status: status.clone(),
            catalog: catalog.clone(),
            loras,
            limits: config.limits.clone(),
            adapter: adapter.clone(),
        });
        let app = router(state, config)?;
        Ok(Server {
            addr,
            adapter,
            catalog,
            listener,
            app,
            status,
            worker,
        })
    }

    /// Serves until `shutdown` resolves, then refuses new work, cancels the running job,
    /// answers every open request and joins the worker.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let status = self.status.clone();
        let stop = async move {
            shutdown.await;
            status.shutting_down.store(true, Ordering::SeqCst);
        };
        let served = axum::serve(self.listener, self.app)
            .with_graceful_shutdown(stop)
            .await;
        // Every handler (and with it the queue's sender) is gone: the worker's loop ends.
        let joined = tokio::task::spawn_blocking(move || self.worker.join()).await;
        served.map_err(|e| Error::invalid("server", e.to_string()))?;
        match joined {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::invalid("GPU worker", "panicked")),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs a server until SIGINT/SIGTERM on its own tokio runtime. `on_ready` is called once the
/// model is loaded and the address bound (the CLI prints it there).
pub fn run(config: &ServeConfig, on_ready: impl FnOnce(&Server)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stipple-http")
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        on_ready(&server);
        server.serve(shutdown_signal()).await
    })
}
