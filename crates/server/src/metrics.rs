//! Prometheus metrics, served at `/metrics` in the text exposition format.
//!
//! One registry per application (not a global), so that tests running several servers in one
//! process each read their own counters. Labels are bounded and never carry patient data nor
//! the hookInstance: a service id (unknown ids collapse to `unknown`), a status code, a card
//! topic and indicator, a feedback outcome, an authentication failure reason.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{web, Error, HttpResponse};
use futures_util::future::LocalBoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use jakguard_storage::{AuditRecord, AuditSink};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CardLabels {
    pub topic: String,
    pub indicator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub key: String,
    pub result: String,
}

fn latency_buckets() -> Histogram {
    // From 0.5 ms to 5 s: evaluations take well under a millisecond, fetches up to the deadline.
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

/// Every metric jakguard exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    pub cards: Family<CardLabels, Counter>,
    pub feedback: Family<OutcomeLabels, Counter>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub fetch_latency: Family<FetchLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jakguard");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_buckets,
        );
        let cards = Family::<CardLabels, Counter>::default();
        let feedback = Family::<OutcomeLabels, Counter>::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let fetch_latency =
            Family::<FetchLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_buckets,
            );
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint",
            latency.clone(),
        );
        registry.register(
            "cards",
            "Cards returned, by topic and indicator",
            cards.clone(),
        );
        registry.register(
            "feedback",
            "Feedback items stored, by outcome",
            feedback.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused CDS client tokens, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "fhir_fetch_duration_seconds",
            "Reads from the EHR's FHIR server, by prefetch key and result",
            fetch_latency.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            cards,
            feedback,
            auth_failures,
            fetch_latency,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn feedback_outcome(&self, outcome: &str) {
        self.feedback
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn fetched(&self, key: &str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.fetch_latency
            .get_or_create(&FetchLabels {
                key: key.to_owned(),
                result: result.to_owned(),
            })
            .observe(seconds);
    }
}

/// The endpoint label of a path: bounded, whatever the client sends.
pub fn endpoint_of(path: &str) -> String {
    let known = |id: &str| jakguard_cds::services::find(id).is_some();
    match path
        .trim_end_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["", "cds-services"] => "discovery".into(),
        ["", "cds-services", id] if known(id) => (*id).to_owned(),
        ["", "cds-services", id, "feedback"] if known(id) => format!("{id}/feedback"),
        ["", "health", _] => "health".into(),
        ["", "metrics"] => "metrics".into(),
        ["", "openapi.json"] => "openapi".into(),
        _ => "unknown".into(),
    }
}

/// Counts and times every request.
#[derive(Clone)]
pub struct Measure(pub Arc<Metrics>);

impl<S, B> Transform<S, ServiceRequest> for Measure
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = MeasureMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(MeasureMiddleware {
            service: Rc::new(service),
            metrics: self.0.clone(),
        }))
    }
}

pub struct MeasureMiddleware<S> {
    service: Rc<S>,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<ServiceRequest> for MeasureMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let endpoint = endpoint_of(req.path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        // One span per request: the endpoint, and the hookInstance once the body is read.
        let span = tracing::info_span!(
            "request",
            endpoint = %endpoint,
            method = %req.method(),
            hook_instance = tracing::field::Empty,
        );
        let fut = tracing::Instrument::instrument(self.service.call(req), span);
        Box::pin(async move {
            let res = fut.await;
            let status = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => e.as_response_error().status_code().as_u16().to_string(),
            };
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: endpoint.clone(),
                    status,
                })
                .inc();
            metrics
                .latency
                .get_or_create(&EndpointLabels { endpoint })
                .observe(started.elapsed().as_secs_f64());
            res
        })
    }
}

/// Counts the cards of each evaluation on their way to the audit trail.
pub struct CountingAudit {
    pub inner: Arc<dyn AuditSink>,
    pub metrics: Arc<Metrics>,
}

impl AuditSink for CountingAudit {
    fn record(&self, audit: AuditRecord) {
        for c in &audit.cards {
            self.metrics
                .cards
                .get_or_create(&CardLabels {
                    topic: c.topic.clone(),
                    indicator: c.indicator.clone(),
                })
                .inc();
        }
        self.inner.record(audit);
    }

    fn stats(&self) -> jakguard_storage::AuditStats {
        self.inner.stats()
    }
}

pub(crate) async fn render(metrics: web::Data<Arc<Metrics>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_are_bounded() {
        assert_eq!(endpoint_of("/cds-services"), "discovery");
        assert_eq!(
            endpoint_of("/cds-services/jakguard-order-sign"),
            "jakguard-order-sign"
        );
        assert_eq!(
            endpoint_of("/cds-services/jakguard-order-sign/feedback"),
            "jakguard-order-sign/feedback"
        );
        assert_eq!(endpoint_of("/cds-services/patient-123-smith"), "unknown");
        assert_eq!(endpoint_of("/anything/else"), "unknown");
    }
}
