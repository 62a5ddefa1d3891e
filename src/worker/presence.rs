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

/// ECS task scale-in protection, through the ECS agent's endpoint (`$ECS_AGENT_URI`): a worker
/// holding a job protects its task, so a scale-in of the service stops idle tasks only.
#[derive(Debug)]
pub struct TaskProtection {
    url: String,
    http: reqwest::Client,
    /// What the agent last accepted.
    on: bool,
}

/// How long protection lasts unless renewed or lifted: the agent's maximum (48 hours).
pub const PROTECTION_MINUTES: u32 = 2_880;

impl TaskProtection {
    /// Inside an ECS task (`$ECS_AGENT_URI` set), a handle on its protection.
    pub fn from_env() -> Option<Self> {
        let base = std::env::var("ECS_AGENT_URI").ok().filter(|b| !b.is_empty())?;
        let http = reqwest::Client::builder().timeout(METADATA_TIMEOUT).build().ok()?;
        Some(TaskProtection {
            url: format!("{}/task-protection/v1/state", base.trim_end_matches('/')),
            http,
            on: false,
        })
    }

    /// Protects the task (`on`) or lifts its protection, unless it already is so. A failure is
    /// logged and tried again next time: the worker runs its jobs either way.
    pub async fn set(&mut self, on: bool) {
        if self.on == on {
            return;
        }
        let body = if on {
            serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": PROTECTION_MINUTES})
        } else {
            serde_json::json!({"ProtectionEnabled": false})
        };
        match self.http.put(&self.url).json(&body).send().await.and_then(reqwest::Response::error_for_status) {
            Ok(_) => {
                self.on = on;
                tracing::debug!(protected = on, "ECS task scale-in protection set");
            }
            Err(err) => tracing::warn!(error = %err, protected = on, "cannot set the ECS task's scale-in protection"),
        }
    }
}
