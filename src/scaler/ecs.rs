//! The `ecs` provider (cargo feature `ecs`): an ECS service's desired count, set through the
//! AWS API, with the running count read back.
//!
//! Busy tasks are not this provider's to spare: each `wharf worker` protects its own task
//! from scale-in while it holds a job (through the ECS agent, see `worker::presence`), and ECS
//! passes protected tasks by when it lowers the count. Credentials and region are found the
//! standard way (environment, profile, SSO, the task or instance role); `AWS_ENDPOINT_URL`
//! points it elsewhere, as for any AWS SDK.

use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::{Fleet, Provider};
use crate::store::WorkerInfo;

/// An ECS service.
#[derive(Debug)]
pub struct Service {
    client: aws_sdk_ecs::Client,
    cluster: String,
    service: String,
}

impl Service {
    /// The service `service` of `cluster`, in `region` (default: the standard lookup).
    pub async fn connect(cluster: &str, service: &str, region: Option<&str>) -> Self {
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_owned()));
        }
        let config = loader.load().await;
        Service { client: aws_sdk_ecs::Client::new(&config), cluster: cluster.to_owned(), service: service.to_owned() }
    }
}

#[async_trait::async_trait]
impl Provider for Service {
    async fn apply(&mut self, desired: u32, _workers: &[WorkerInfo]) -> anyhow::Result<Fleet> {
        let described = self.client.describe_services().cluster(&self.cluster).services(&self.service).send().await?;
        let Some(found) = described.services().first() else {
            let why = described.failures().first().and_then(|f| f.reason()).unwrap_or("not found");
            anyhow::bail!("service {} in cluster {}: {why}", self.service, self.cluster);
        };
        let want = i32::try_from(desired).unwrap_or(i32::MAX);
        if found.desired_count() != want {
            self.client
                .update_service()
                .cluster(&self.cluster)
                .service(&self.service)
                .desired_count(want)
                .send()
                .await?;
        }
        Ok(Fleet { actual: u32::try_from(found.running_count()).unwrap_or(0), draining: 0 })
    }

    fn owns(&self, _worker: &WorkerInfo) -> bool {
        // A task's ARN names its cluster, not its service: the pool's workers are told by
        // their queues.
        false
    }

    async fn release(&mut self) {
        // The service keeps its count for the next leader.
    }
}
