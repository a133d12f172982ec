//! The HTTP face of jakguard (actix-web): routes, CORS, body limits, errors as
//! OperationOutcomes. Startup is separated from `main` so that tests can run the real server
//! on port 0 (see [`Application::build`]).
//!
//! Invariants:
//! - every answer to a client fault is a 4xx with an OperationOutcome; nothing a client sends
//!   produces a 5xx (a panic in evaluation is caught and answered 500 as a last resort);
//! - no patient data, token or body is logged: only the service id, the hookInstance, the
//!   status and the duration.

mod auth;
pub mod config;
mod feedback;
mod floor;
mod health;
mod http;
pub mod metrics;
mod openapi;
mod service;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{web, App, HttpServer};
use jakguard_cds::Engine;
use jakguard_knowledge::{Knowledge, Lang};
use jakguard_rules::Date;
use jakguard_storage::{AuditSink, FeedbackStore, MemoryAudit, MemoryStore};

pub use config::Config;
/// The fetcher, for `jakguard eval` and the tests.
pub use jakguard_fetch as fetch;

/// What every request handler shares.
pub struct AppState {
    pub engine: Engine,
    pub store: Arc<dyn FeedbackStore>,
    pub audit: Arc<dyn AuditSink>,
    pub default_language: Lang,
    pub body_limit: usize,
    /// Fetches what the prefetch lacks from the EHR's FHIR server (one pooled client).
    pub fetcher: Arc<jakguard_fetch::Fetcher>,
    pub metrics: Arc<metrics::Metrics>,
    /// `/health/ready` is 503 while storage is down (see `Config::ready_requires_storage`).
    pub ready_requires_storage: bool,
    /// The stores as opened, unwrapped: readiness reads the audit trail's counters here, so
    /// that a wrapper around `audit` (metrics) cannot hide a backlog.
    pub stores: Stores,
}

/// Where feedback and audit records go.
#[derive(Clone)]
pub struct Stores {
    pub feedback: Arc<dyn FeedbackStore>,
    pub audit: Arc<dyn AuditSink>,
}

impl Stores {
    /// In-memory stores (development and tests).
    pub fn memory() -> Stores {
        let audit = Arc::new(MemoryAudit::default());
        Stores {
            feedback: Arc::new(MemoryStore::with_audit(audit.clone())),
            audit,
        }
    }

    /// The stores the configuration names: SQLite under `storage.data_dir` by default,
    /// PostgreSQL or memory when `storage.url` says so. Connects, migrates and starts the
    /// audit writer before the service listens; a database that cannot be opened stops
    /// start-up with the reason.
    pub fn from_config(config: &Config) -> Result<Stores, jakguard_storage::OpenError> {
        let opened = jakguard_storage::open(&config.storage.options())?;
        Ok(Stores {
            feedback: opened.feedback,
            audit: opened.audit,
        })
    }
}

/// A built server, bound but not yet running.
pub struct Application {
    port: u16,
    server: Server,
    pub stores: Stores,
}

impl Application {
    /// Loads the knowledge, binds the listener and builds the server.
    pub fn build(config: &Config) -> anyhow_like::Result<Application> {
        let knowledge = match &config.knowledge_dir {
            Some(dir) => Knowledge::from_dir(dir)?,
            None => Knowledge::embedded()?,
        };
        let listener = TcpListener::bind(config.bind)?;
        Self::with_listener(
            config,
            Arc::new(knowledge),
            listener,
            Stores::from_config(config)?,
        )
    }

    pub fn with_listener(
        config: &Config,
        knowledge: Arc<Knowledge>,
        listener: TcpListener,
        stores: Stores,
    ) -> anyhow_like::Result<Application> {
        let local = listener.local_addr()?;
        let port = local.port();
        let app_metrics = Arc::new(metrics::Metrics::new());
        let authenticate = auth::Authenticate {
            verifier: Arc::new(jakguard_auth::Verifier::new(&config.clients)?),
            public_base: config
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{local}"))
                .into(),
            on_failure: {
                let m = app_metrics.clone();
                Arc::new(move |reason| m.auth_failure(reason))
            },
        };
        let fetcher = Arc::new(jakguard_fetch::Fetcher::new(config.fhir.fetch_config())?);
        let state = web::Data::new(AppState {
            engine: Engine::new(knowledge),
            store: stores.feedback.clone(),
            audit: Arc::new(metrics::CountingAudit {
                inner: stores.audit.clone(),
                metrics: app_metrics.clone(),
            }),
            default_language: config.default_language,
            body_limit: config.body_limit,
            fetcher,
            metrics: app_metrics.clone(),
            ready_requires_storage: config.ready_requires_storage,
            stores: stores.clone(),
        });
        let metrics_data = web::Data::new(app_metrics.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(metrics_data.clone())
                .wrap(authenticate.clone())
                .wrap(metrics::Measure(app_metrics.clone()))
                .wrap(cors())
                .route("/cds-services", web::get().to(service::discovery))
                .configure(floor::configure)
                .configure(service::routes)
                .route(
                    "/cds-services/{id}/feedback",
                    web::post().to(feedback::feedback),
                )
                .route("/openapi.json", web::get().to(openapi::document))
                .route("/metrics", web::get().to(metrics::render))
                .route("/health/live", web::get().to(health::live))
                .route("/health/ready", web::get().to(health::ready))
                .default_service(web::to(health::not_found))
        })
        .shutdown_timeout(config.shutdown_grace_seconds)
        .client_request_timeout(std::time::Duration::from_secs(10))
        .client_disconnect_timeout(std::time::Duration::from_secs(2))
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            stores,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until stopped (SIGINT/SIGTERM stop it gracefully).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Errors of startup: the knowledge, the listener.
pub mod anyhow_like {
    #[derive(Debug, thiserror::Error)]
    pub enum StartError {
        #[error(transparent)]
        Knowledge(#[from] jakguard_knowledge::KnowledgeError),
        #[error("cannot listen: {0}")]
        Io(#[from] std::io::Error),
        #[error(transparent)]
        Fetch(#[from] jakguard_fetch::FetchError),
        #[error(transparent)]
        Storage(#[from] jakguard_storage::OpenError),
        #[error("authentication: {0}")]
        Auth(#[from] jakguard_auth::ConfigError),
    }
    pub type Result<T> = std::result::Result<T, StartError>;
}

/// Browser clients such as the CDS Hooks sandbox send a preflight before every call.
fn cors() -> Cors {
    Cors::default()
        .allow_any_origin()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::ACCEPT_LANGUAGE,
        ])
        .max_age(3600)
}

/// Today's date in UTC, for the rules.
pub fn today_utc() -> Date {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Date::from_days_since_epoch(secs.div_euclid(86_400))
}

/// The language of an `Accept-Language` header: the first of `fr` or `en` by preference.
pub fn negotiate_language(header: Option<&str>, default: Lang) -> Lang {
    let Some(h) = header else { return default };
    let mut best: Option<(f32, Lang)> = None;
    for part in h.split(',') {
        let mut it = part.split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|v| v.trim().parse::<f32>().ok())
            })
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let lang = match primary {
            "fr" => Lang::Fr,
            "en" => Lang::En,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or(default, |(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_supported_language() {
        assert_eq!(
            negotiate_language(Some("fr-FR,fr;q=0.9,en;q=0.8"), Lang::En),
            Lang::Fr
        );
        assert_eq!(
            negotiate_language(Some("de-DE, en;q=0.5"), Lang::Fr),
            Lang::En
        );
        assert_eq!(negotiate_language(Some("de-DE"), Lang::Fr), Lang::Fr);
        assert_eq!(
            negotiate_language(Some("en;q=0.3, fr;q=0.7"), Lang::En),
            Lang::Fr
        );
        assert_eq!(negotiate_language(None, Lang::Fr), Lang::Fr);
    }
}
