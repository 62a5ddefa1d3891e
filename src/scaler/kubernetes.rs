//! The `kubernetes` provider: a Deployment's replicas, set through its scale subresource, with
//! busy pods marked costlier to delete than idle ones.
//!
//! Each tick it gives every pod of the Deployment that runs a worker a
//! `controller.kubernetes.io/pod-deletion-cost` annotation — 0 when idle, 1,000 plus its
//! running jobs when busy (changed ones only) — and then, if the decision differs, patches
//! `spec.replicas`. On a scale-in the ReplicaSet controller deletes the cheapest pods first:
//! idle ones, as the policy never asks for fewer workers than are busy. It reads the running
//! count from the scale subresource's `status.replicas`.
//!
//! It talks to the API server the way in-cluster clients do: `KUBERNETES_SERVICE_HOST` and
//! `_PORT`, the service account's token (reread on each call, as the kubelet rotates it), CA
//! and namespace under `/var/run/secrets/kubernetes.io/serviceaccount` (another directory with
//! `WHARF_KUBERNETES_SERVICEACCOUNT_DIR`). Three REST calls do not warrant a full client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use super::{Fleet, Provider};
use crate::store::WorkerInfo;

/// The annotation the ReplicaSet controller orders pods by when it scales in.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Where the service account's files are mounted.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Longest an API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The API server, as seen from inside the cluster.
#[derive(Debug)]
struct Api {
    base: String,
    token_file: PathBuf,
    http: reqwest::Client,
}

impl Api {
    fn in_cluster() -> anyhow::Result<(Self, PathBuf)> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| anyhow!("it runs inside a Kubernetes cluster, and KUBERNETES_SERVICE_HOST is not set"))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let dir = std::env::var_os("WHARF_KUBERNETES_SERVICEACCOUNT_DIR")
            .map_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR), PathBuf::from);
        let ca_path = dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).with_context(|| format!("cannot read {}", ca_path.display()))?;
        let mut http = reqwest::Client::builder().timeout(CALL_TIMEOUT);
        for cert in reqwest::Certificate::from_pem_bundle(&ca).context("the cluster's CA is not PEM")? {
            http = http.add_root_certificate(cert);
        }
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let api = Api { base: format!("https://{host}:{port}"), token_file: dir.join("token"), http: http.build()? };
        Ok((api, dir))
    }

    /// A merge patch, or a GET when `patch` is `None`; the answer's JSON.
    async fn call(&self, path: &str, patch: Option<&Value>) -> anyhow::Result<Value> {
        let token = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("cannot read the service account token {}", self.token_file.display()))?;
        let url = format!("{}{path}", self.base);
        let request = match patch {
            Some(body) => self
                .http
                .patch(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/merge-patch+json")
                .body(body.to_string()),
            None => self.http.get(&url),
        };
        let response = request.bearer_auth(token.trim()).send().await.with_context(|| url.clone())?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            // A `Status` object says why.
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(200).collect());
            bail!("{} {path}: {status}: {message}", if patch.is_some() { "PATCH" } else { "GET" });
        }
        serde_json::from_str(&text).with_context(|| format!("{path}: the answer is not JSON"))
    }
}

/// A Deployment's replicas.
#[derive(Debug)]
pub struct Deployment {
    api: Api,
    namespace: String,
    name: String,
    /// The deletion cost last set on each pod.
    costs: HashMap<String, i64>,
}

impl Deployment {
    /// The Deployment `name` in `namespace` (default: the service account's).
    pub fn in_cluster(namespace: Option<&str>, name: &str) -> anyhow::Result<Self> {
        let (api, dir) = Api::in_cluster()?;
        let namespace = match namespace {
            Some(ns) => ns.to_owned(),
            None => std::fs::read_to_string(dir.join("namespace"))
                .map(|ns| ns.trim().to_owned())
                .context("no namespace given and none mounted with the service account")?,
        };
        Ok(Deployment { api, namespace, name: name.to_owned(), costs: HashMap::new() })
    }

    fn scale_path(&self) -> String {
        format!("/apis/apps/v1/namespaces/{}/deployments/{}/scale", self.namespace, self.name)
    }

    /// Marks busy pods costlier to delete than idle ones, patching only changes.
    async fn mark_pods(&mut self, workers: &[WorkerInfo]) -> anyhow::Result<()> {
        let mut now: HashMap<String, i64> = HashMap::new();
        for worker in workers.iter().filter(|w| self.owns(w)) {
            let Some(pod) = &worker.presence.pod else { continue };
            let cost = if worker.running > 0 { 1_000 + worker.running.min(1_000_000) as i64 } else { 0 };
            let entry = now.entry(pod.clone()).or_insert(cost);
            *entry = (*entry).max(cost);
        }
        for (pod, cost) in &now {
            if self.costs.get(pod) == Some(cost) {
                continue;
            }
            let path = format!("/api/v1/namespaces/{}/pods/{pod}", self.namespace);
            let patch = json!({"metadata": {"annotations": {DELETION_COST: cost.to_string()}}});
            self.api.call(&path, Some(&patch)).await?;
        }
        // Pods gone from the list are forgotten: the map holds this Deployment's pods only.
        self.costs = now;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Provider for Deployment {
    async fn apply(&mut self, desired: u32, workers: &[WorkerInfo]) -> anyhow::Result<Fleet> {
        self.mark_pods(workers).await?;
        let path = self.scale_path();
        let mut scale = self.api.call(&path, None).await?;
        if scale["spec"]["replicas"].as_u64() != Some(u64::from(desired)) {
            scale = self.api.call(&path, Some(&json!({"spec": {"replicas": desired}}))).await?;
        }
        let running = scale["status"]["replicas"].as_u64().unwrap_or(0);
        Ok(Fleet { actual: u32::try_from(running).unwrap_or(u32::MAX), draining: 0 })
    }

    fn owns(&self, worker: &WorkerInfo) -> bool {
        // A Deployment's pods are named `<deployment>-<template hash>-<suffix>`.
        worker
            .presence
            .pod
            .as_deref()
            .is_some_and(|pod| pod.strip_prefix(self.name.as_str()).is_some_and(|rest| rest.starts_with('-')))
    }

    async fn release(&mut self) {
        // The Deployment stays as it is for the next leader; it will re-mark the pods.
        self.costs.clear();
    }
}
