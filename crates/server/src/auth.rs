//! The authentication middleware: every endpoint but health checks, metrics and the OpenAPI document
//! requires a valid CDS client JWT once clients are configured (see `jakguard-auth`).
//!
//! It sits inside CORS, so that browser preflights are answered before any token is asked for
//! and a 401 still carries the CORS headers the browser needs to read it.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::EitherBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, Method};
use actix_web::{Error, HttpResponse};
use futures_util::future::LocalBoxFuture;
use jakguard_auth::Verifier;

/// Paths anyone may read.
fn is_public(path: &str) -> bool {
    // Metrics carry no patient data; who may scrape them is the network policy's concern.
    path.starts_with("/health/") || path == "/openapi.json" || path == "/metrics"
}

/// Wraps the app with token verification. `public_base` is the service's public URL
/// (scheme, host, port, prefix) from which the expected `aud` of each call is derived.
#[derive(Clone)]
pub struct Authenticate {
    pub verifier: Arc<Verifier>,
    pub public_base: Arc<str>,
    pub on_failure: Arc<dyn Fn(&'static str) + Send + Sync>,
}

impl<S, B> Transform<S, ServiceRequest> for Authenticate
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = AuthenticateMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AuthenticateMiddleware {
            service: Rc::new(service),
            config: self.clone(),
        }))
    }
}

pub struct AuthenticateMiddleware<S> {
    service: Rc<S>,
    config: Authenticate,
}

impl<S, B> Service<ServiceRequest> for AuthenticateMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let config = self.config.clone();
        Box::pin(async move {
            if !config.verifier.enabled()
                || req.method() == Method::OPTIONS
                || is_public(req.path())
            {
                return service
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body);
            }
            let path = req.path().to_owned();
            let url = format!("{}{}", config.public_base.trim_end_matches('/'), path);
            // Feedback is about a service: accept the service's URL as audience too.
            let service_url = path
                .strip_suffix("/feedback")
                .map(|p| format!("{}{}", config.public_base.trim_end_matches('/'), p));
            let mut audiences: Vec<&str> = vec![url.as_str()];
            if let Some(s) = &service_url {
                audiences.push(s.as_str());
            }
            let authorization = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            match config
                .verifier
                .verify(authorization.as_deref(), &audiences, now)
                .await
            {
                Ok(caller) => {
                    tracing::debug!(issuer = %caller.issuer, "authenticated");
                    service
                        .call(req)
                        .await
                        .map(ServiceResponse::map_into_left_body)
                }
                Err(failure) => {
                    // The reason goes to the log, never the token nor to the client.
                    tracing::warn!(reason = %failure, path = %path, "authentication failed");
                    (config.on_failure)(failure.label());
                    let resp = HttpResponse::Unauthorized()
                        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                        .finish()
                        .map_into_right_body();
                    Ok(req.into_response(resp))
                }
            }
        })
    }
}
