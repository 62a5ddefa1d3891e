//! Pools as the config file declares them (`[[pool]]`), validated at start.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::core::QueueName;
use crate::core::scaling::{ScalePolicy, ScalePolicyError};

/// A pool of workers the autoscaler sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Its name, unique among pools (`GET /v1/pools/{pool}`).
    pub name: String,
    /// The queues its workers serve: their backlog sizes it.
    pub queues: Vec<QueueName>,
    /// Its size limits, target and cooldowns.
    pub policy: ScalePolicy,
    /// What starts and stops its workers.
    pub provider: ProviderConfig,
}

/// What starts and stops a pool's workers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// Local processes, started by `wharf serve` itself.
    Process {
        /// The program and its arguments, e.g. `["wharf", "worker", "--queue", "pdf", "--exec",
        /// "./render.sh"]`; it gets `WHARF_SERVER` (this server) and `WHARF_WORKER_ID`.
        command: Vec<String>,
    },
    /// An ECS service's desired count.
    Ecs {
        /// The cluster's name or ARN.
        cluster: String,
        /// The service's name or ARN.
        service: String,
        /// The AWS region; defaults to the standard lookup (`AWS_REGION`, the profile).
        #[serde(default)]
        region: Option<String>,
    },
    /// A Kubernetes Deployment's replicas.
    Kubernetes {
        /// Its namespace; defaults to the service account's.
        #[serde(default)]
        namespace: Option<String>,
        /// The Deployment's name.
        deployment: String,
    },
}

impl ProviderConfig {
    /// `process`, `ecs` or `kubernetes`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Process { .. } => "process",
            ProviderConfig::Ecs { .. } => "ecs",
            ProviderConfig::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// A `[[pool]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    name: String,
    queues: Vec<String>,
    #[serde(default)]
    min: u32,
    max: u32,
    #[serde(default = "default_target")]
    target_backlog_per_worker: u32,
    #[serde(default)]
    scale_out_cooldown: Option<String>,
    #[serde(default)]
    scale_in_cooldown: Option<String>,
    provider: ProviderConfig,
}

fn default_target() -> u32 {
    5
}

/// Most pools one server scales.
pub const MAX_POOLS: usize = 100;

/// A pool that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("pool {pool}: {problem}")]
pub struct PoolConfigError {
    /// Its name (or position, when it has none).
    pub pool: String,
    /// What is wrong.
    pub problem: String,
}

/// Parses and checks every `[[pool]]` table.
pub fn load_all(tables: Vec<toml::Table>) -> Result<Vec<PoolConfig>, PoolConfigError> {
    if tables.len() > MAX_POOLS {
        let problem = format!("{} pools declared; at most {MAX_POOLS}", tables.len());
        return Err(PoolConfigError { pool: "*".into(), problem });
    }
    let mut names = HashSet::new();
    let mut pools = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let label = table.get("name").and_then(|n| n.as_str()).map_or_else(|| format!("#{}", i + 1), str::to_owned);
        let fail = |problem: String| PoolConfigError { pool: label.clone(), problem };
        let file: PoolFile =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| fail(e.message().to_owned()))?;
        let pool = parse(file).map_err(fail)?;
        if !names.insert(pool.name.clone()) {
            return Err(fail("defined more than once; pool names must be unique".into()));
        }
        pools.push(pool);
    }
    Ok(pools)
}

fn parse(file: PoolFile) -> Result<PoolConfig, String> {
    let name = crate::core::validate::name("name", file.name).map_err(|e| e.reason)?;
    if name.len() > 128 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("the name must be 1–128 characters of A-Z a-z 0-9 . _ -".into());
    }
    if file.queues.is_empty() || file.queues.len() > 32 {
        return Err("queues must name 1 to 32 queues".into());
    }
    let queues = file
        .queues
        .iter()
        .map(|q| QueueName::parse(q).map_err(|e| format!("queue {q:?}: {}", e.reason)))
        .collect::<Result<Vec<_>, _>>()?;
    let cooldown = |text: Option<String>, default: Duration, what: &str| match text {
        Some(text) => humantime::parse_duration(&text).map_err(|e| format!("{what} {text:?}: {e}")),
        None => Ok(default),
    };
    let out = cooldown(file.scale_out_cooldown, ScalePolicy::DEFAULT_SCALE_OUT_COOLDOWN, "scale_out_cooldown")?;
    let inward = cooldown(file.scale_in_cooldown, ScalePolicy::DEFAULT_SCALE_IN_COOLDOWN, "scale_in_cooldown")?;
    let policy = ScalePolicy::new(file.min, file.max, file.target_backlog_per_worker, out, inward)
        .map_err(|e: ScalePolicyError| e.to_string())?;
    if let ProviderConfig::Process { command } = &file.provider
        && command.first().is_none_or(String::is_empty)
    {
        return Err("provider.command must name a program".into());
    }
    Ok(PoolConfig { name, queues, policy, provider: file.provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<PoolConfig>, PoolConfigError> {
        #[derive(Deserialize)]
        struct File {
            pool: Vec<toml::Table>,
        }
        load_all(toml::from_str::<File>(text).expect("valid TOML").pool)
    }

    #[test]
    fn the_documented_pool_loads_with_its_defaults() {
        let pools = load(
            r#"
            [[pool]]
            name = "pdf"
            queues = ["pdf"]
            max = 4
            provider = { kind = "process", command = ["wharf", "worker", "--queue", "pdf", "--exec", "./render.sh"] }

            [[pool]]
            name = "video"
            queues = ["video", "video-hi"]
            min = 1
            max = 10
            target_backlog_per_worker = 1
            scale_out_cooldown = "30s"
            scale_in_cooldown = "2m"
            provider = { kind = "ecs", cluster = "workers", service = "video-worker", region = "us-east-1" }
            "#,
        )
        .expect("valid pools");
        assert_eq!(pools.len(), 2);
        let pdf = &pools[0].policy;
        assert_eq!((pdf.min(), pdf.max(), pdf.target_backlog_per_worker()), (0, 4, 5));
        assert_eq!(
            (pdf.scale_out_cooldown(), pdf.scale_in_cooldown()),
            (ScalePolicy::DEFAULT_SCALE_OUT_COOLDOWN, ScalePolicy::DEFAULT_SCALE_IN_COOLDOWN)
        );
        assert_eq!(pools[1].policy.scale_in_cooldown(), Duration::from_secs(120));
        assert_eq!(pools[1].provider.kind(), "ecs");
    }

    #[test]
    fn a_bad_pool_is_refused_with_its_name_and_cause() {
        for (text, expected) in [
            (
                r#"name = "a"
                queues = ["q"]
                min = 5
                max = 2
                provider = { kind = "process", command = ["w"] }"#,
                "pool a: ",
            ),
            (
                r#"name = "a"
                queues = []
                max = 2
                provider = { kind = "process", command = ["w"] }"#,
                "queues must name",
            ),
            (
                r#"name = "a"
                queues = ["q"]
                max = 2
                provider = { kind = "process", command = [] }"#,
                "must name a program",
            ),
            (
                r#"name = "a"
                queues = ["q"]
                max = 2
                scale_in_cooldown = "soon"
                provider = { kind = "process", command = ["w"] }"#,
                "scale_in_cooldown \"soon\"",
            ),
            (
                r#"name = "a"
                queues = ["q"]
                max = 2
                provider = { kind = "lambda" }"#,
                "lambda",
            ),
            (
                r#"name = "a"
                queues = ["q"]
                maximum = 2
                provider = { kind = "process", command = ["w"] }"#,
                "maximum",
            ),
        ] {
            let err = load(&format!("[[pool]]\n{text}")).expect_err(text).to_string();
            assert!(err.starts_with("pool a: ") && err.contains(expected), "{err}");
        }
        let twice =
            "[[pool]]\nname = \"a\"\nqueues = [\"q\"]\nmax = 1\nprovider = { kind = \"process\", command = [\"w\"] }\n";
        let err = load(&format!("{twice}{twice}")).expect_err("duplicate").to_string();
        assert!(err.contains("more than once"), "{err}");
    }
}
