//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations on the handlers and
//! the `ToSchema` derives on the wire types, so it cannot drift from the code.

use utoipa::OpenApi;

use super::routes::{jobs, ops, queues, work};
use super::sse;

#[derive(OpenApi)]
#[openapi(
    info(title = "wharf", description = "Background jobs over HTTP: enqueue, lease, progress, results."),
    paths(
        jobs::enqueue, jobs::enqueue_batch, jobs::get, jobs::list, jobs::cancel,
        sse::job_events, sse::all_events,
        queues::list, queues::get, queues::put, queues::pause, queues::resume, queues::redrive,
        work::lease, work::workers, work::heartbeat, work::complete, work::fail, work::release, work::ack,
        ops::health, ops::ready, ops::metrics, ops::openapi,
    ),
    tags(
        (name = "jobs", description = "Enqueue and follow jobs"),
        (name = "queues", description = "Queue policy, counts and dead letters"),
        (name = "workers", description = "The protocol workers speak"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
