//! Where a worker runs, as it tells the server with each lease request: its host and process,
//! and the ECS task or Kubernetes pod around it, so a scaling provider can tell which task or
//! pod is busy.

use std::time::Duration;

/// What [`detect`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    /// This machine's host name.
    pub host: Option<String>,
    /// The ECS task's ARN, from the task metadata endpoint.
    pub task_arn: Option<String>,
    /// The Kubernetes pod's name.
    pub pod: Option<String>,
}

/// How long the task metadata endpoint may take; a worker starts without the ARN past it.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// Looks around: the host name, `$ECS_CONTAINER_METADATA_URI_V4/task` inside an ECS task, and
/// the pod's name inside Kubernetes (`$POD_NAME` from the downward API, else the host name,
/// which Kubernetes sets to the pod's).
pub async fn detect() -> Presence {
    let host = super::host_name();
    let task_arn = match std::env::var("ECS_CONTAINER_METADATA_URI_V4") {
        Ok(base) if !base.is_empty() => match task_arn(&base).await {
            Ok(arn) => Some(arn),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the ECS task's ARN from the task metadata endpoint");
                None
            }
        },
        _ => None,
    };
    let pod = std::env::var("POD_NAME")
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| std::env::var_os("KUBERNETES_SERVICE_HOST").and_then(|_| host.clone()));
    Presence { host, task_arn, pod }
}

/// The `TaskARN` of the task metadata endpoint (version 4) at `base`.
async fn task_arn(base: &str) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Task {
        #[serde(rename = "TaskARN")]
        task_arn: String,
    }
    let client = reqwest::Client::builder().timeout(METADATA_TIMEOUT).build()?;
    let url = format!("{}/task", base.trim_end_matches('/'));
    let task: Task = client.get(url).send().await?.error_for_status()?.json().await?;
    Ok(task.task_arn)
}
