//! The connector layers of the two HTTP clients (see the parent module).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::{BoxError, Egress};
use crate::engine::forensics::Probe;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The proxied client's connector layer (see the module documentation).
#[derive(Debug, Clone)]
pub struct TunnelLayer(pub Arc<Egress>);

/// The direct client's connector layer: times the connection for the request's probe.
#[derive(Debug, Clone, Copy)]
pub struct TimingLayer;

#[derive(Debug, Clone)]
pub struct Layered<S, L> {
    inner: S,
    layer: L,
}

impl<S> tower_layer::Layer<S> for TunnelLayer {
    type Service = Layered<S, Self>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered { inner, layer: self.clone() }
    }
}

impl<S> tower_layer::Layer<S> for TimingLayer {
    type Service = Layered<S, Self>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered { inner, layer: *self }
    }
}

impl<S, R> tower_service::Service<R> for Layered<S, TunnelLayer>
where
    S: tower_service::Service<R, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let egress = Arc::clone(&self.layer.0);
        let probe = Probe::current();
        Box::pin(async move { egress.connect(probe, inner, request).await })
    }
}

impl<S, R> tower_service::Service<R> for Layered<S, TimingLayer>
where
    S: tower_service::Service<R, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let probe = Probe::current();
        let started = Instant::now();
        let connecting = self.inner.call(request);
        Box::pin(async move {
            let conn = connecting.await?;
            if let Some(probe) = probe {
                probe.record(|p| {
                    p.connect = Some(started.elapsed().saturating_sub(p.dns.unwrap_or_default()));
                    p.connected = true;
                });
            }
            Ok(conn)
        })
    }
}
