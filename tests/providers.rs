//! Scaling providers against stand-ins of the services they drive: a Kubernetes API server
//! that checks every request it gets (the scale subresource and pod annotation patches, with
//! the service account's token, over TLS) — and the ECS agent's task-protection endpoint.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};

use crate::common::{TestServer, TestWorker, script};

/// A request the stand-in received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    authorization: String,
    body: Value,
}

/// A Kubernetes API server holding one Deployment's scale.
struct KubeStandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

const TOKEN: &str = "service-account-token-for-tests";
const SCALE_PATH: &str = "/apis/apps/v1/namespaces/jobs/deployments/pdf-worker/scale";

impl KubeStandIn {
    async fn start(leaf: &crate::common::pki::Leaf) -> Self {
        let certs = vec![rustls::pki_types::CertificateDer::from(leaf.der.clone())];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let replicas = Arc::new(Mutex::new(0u64));
        let state = (Arc::clone(&seen), replicas);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |req| answer(req, state.clone()));
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        KubeStandIn { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type State = (Arc<Mutex<Vec<Seen>>>, Arc<Mutex<u64>>);

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    (seen, replicas): State,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
    let (content_type, authorization) = (header("content-type"), header("authorization"));
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        content_type,
        authorization: authorization.clone(),
        body: body.clone(),
    });
    let reply = |status: u16, body: Value| {
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        Ok(resp)
    };
    if authorization != format!("Bearer {TOKEN}") {
        return reply(401, json!({"kind": "Status", "message": "Unauthorized"}));
    }
    let scale = |n: u64| json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": {"replicas": n}, "status": {"replicas": n}});
    match (method.as_str(), path.as_str()) {
        ("GET", SCALE_PATH) => reply(200, scale(*replicas.lock().unwrap())),
        ("PATCH", SCALE_PATH) => match body["spec"]["replicas"].as_u64() {
            Some(n) => {
                *replicas.lock().unwrap() = n;
                reply(200, scale(n))
            }
            None => reply(422, json!({"kind": "Status", "message": "spec.replicas missing"})),
        },
        ("PATCH", p) if p.starts_with("/api/v1/namespaces/jobs/pods/pdf-worker-") => {
            reply(200, json!({"kind": "Pod", "metadata": body["metadata"].clone()}))
        }
        _ => reply(404, json!({"kind": "Status", "message": format!("{method} {path} not found")})),
    }
}

#[tokio::test]
async fn the_kubernetes_provider_scales_the_deployment_and_marks_busy_pods_costlier_to_delete() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::common::pki::Pki::new();
    let api = KubeStandIn::start(&pki.leaf(1, "kubernetes")).await;
    // The service account's files, as Kubernetes mounts them.
    let account = dir.path().join("serviceaccount");
    std::fs::create_dir(&account).unwrap();
    std::fs::write(account.join("token"), TOKEN).unwrap();
    std::fs::write(account.join("ca.crt"), pki.ca_pem()).unwrap();
    std::fs::write(account.join("namespace"), "jobs\n").unwrap();
    let provider = r#"{ kind = "kubernetes", deployment = "pdf-worker" }"#;
    let config = crate::common::pool_config(dir.path(), "pdf", 0, 2, provider);
    let port = api.addr.port().to_string();
    let server = TestServer::start_full(
        None,
        &["--config", config.to_str().unwrap()],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", port.as_str()),
            ("WHARF_KUBERNETES_SERVICEACCOUNT_DIR", account.to_str().unwrap()),
        ],
    )
    .await;
    // Two workers standing in for the Deployment's pods, as the downward API names them.
    let handler = script(dir.path(), "job.sh", "#!/bin/sh\nsleep \"$(cat)\"\n");
    let handler = handler.to_str().unwrap();
    let pods = ["pdf-worker-5d8c7-aaaaa", "pdf-worker-5d8c7-bbbbb"];
    let _workers: Vec<TestWorker> = pods
        .iter()
        .map(|pod| {
            TestWorker::start_env(&server, dir.path(), &["--queue", "pdf", "--exec", handler], &[("POD_NAME", pod)])
        })
        .collect();
    server.wait_workers(2).await;
    // Both idle pods are marked cheapest before any job arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.seen().iter().filter(|s| s.path.starts_with("/api/v1/namespaces/jobs/pods/")).count() < 2 {
        assert!(Instant::now() < deadline, "idle pods never marked: {:?}", api.seen());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = server.enqueue("pdf", json!({"kind": "render", "payload": 3})).await;
    let job = server.wait_state(&id, "running").await;
    let busy_worker = job["worker_id"].as_str().map(str::to_owned);
    server.wait_done(&id).await;
    // Back to zero after the cooldown.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pool = server.get("/v1/pools/pdf").await.1;
        let scaled: Vec<u64> = api
            .seen()
            .iter()
            .filter(|s| s.method == "PATCH" && s.path == SCALE_PATH)
            .filter_map(|s| s.body["spec"]["replicas"].as_u64())
            .collect();
        if scaled == [1, 0] && pool["actual"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "scale patches {scaled:?}, pool {pool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = api.seen();
    for s in &seen {
        assert_eq!(s.authorization, format!("Bearer {TOKEN}"), "{s:?}");
        if s.method == "PATCH" {
            assert_eq!(s.content_type, "application/merge-patch+json", "{s:?}");
        } else {
            assert_eq!((s.method.as_str(), s.path.as_str()), ("GET", SCALE_PATH), "only the scale is read: {s:?}");
        }
    }
    // Each pod's deletion costs in order: the one that ran the job was costlier while it did.
    let costs = |pod: &str| -> Vec<String> {
        seen.iter()
            .filter(|s| s.method == "PATCH" && s.path == format!("/api/v1/namespaces/jobs/pods/{pod}"))
            .map(|s| {
                assert_eq!(s.body.as_object().unwrap().len(), 1, "only metadata is patched: {:?}", s.body);
                s.body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (a, b) = (costs(pods[0]), costs(pods[1]));
    let (busy, idle) = if a.len() > b.len() { (a, b) } else { (b, a) };
    assert_eq!(busy, ["0", "1001", "0"], "the busy pod: idle, busy, idle again ({busy_worker:?})");
    assert_eq!(idle, ["0"], "the idle pod stays cheapest");
}

/// A stand-in of the ECS agent's task-protection endpoint (records each PUT, answers the
/// state) and of the task metadata endpoint.
async fn ecs_agent_stand_in() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let puts: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = Arc::clone(&puts);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
                        let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let protected = |seen: &[Value]| seen.last().is_some_and(|p| p["ProtectionEnabled"] == true);
                        let (status, body) = match (method.as_str(), path.as_str()) {
                            ("PUT", "/v1/agent/task-protection/v1/state") => {
                                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                                seen.lock().unwrap().push(body);
                                (200, json!({"protection": {"ProtectionEnabled": protected(&seen.lock().unwrap())}}))
                            }
                            ("GET", "/state") => (200, json!(protected(&seen.lock().unwrap()))),
                            // The task metadata endpoint (v4) of the same task.
                            ("GET", "/v4/meta/task") => (200, json!({"Cluster": "workers", "TaskARN": TASK_ARN})),
                            _ => (404, json!({"error": "not found"})),
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (addr, puts)
}

const TASK_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:task/workers/5f1e2d3c4b5a69788796a5b4c3d2e1f0";

#[tokio::test]
async fn a_worker_in_an_ecs_task_reports_it_and_protects_it_while_it_holds_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, puts) = ecs_agent_stand_in().await;
    let server = TestServer::start().await;
    // The job reports, as its result, whether its task was protected while it ran.
    let handler = script(
        dir.path(),
        "job.sh",
        &format!(
            "#!/bin/sh\ncat > /dev/null\n{} result \"$(curl -s http://{agent}/state)\"\n",
            crate::common::wharf_bin()
        ),
    );
    let agent_uri = format!("http://{agent}/v1/agent");
    let metadata_uri = format!("http://{agent}/v4/meta");
    let _worker = TestWorker::start_env(
        &server,
        dir.path(),
        &["--queue", "q", "--exec", handler.to_str().unwrap()],
        &[("ECS_AGENT_URI", agent_uri.as_str()), ("ECS_CONTAINER_METADATA_URI_V4", metadata_uri.as_str())],
    );
    server.wait_workers(1).await;
    let (_, workers) = server.get("/v1/workers").await;
    assert_eq!(workers["workers"][0]["task_arn"], TASK_ARN, "{workers}");
    assert!(puts.lock().unwrap().is_empty(), "an idle worker leaves its task unprotected");
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let job = server.wait_done(&id).await;
    assert_eq!((job["state"].as_str(), &job["result"]), (Some("succeeded"), &json!(true)), "{job}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while puts.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "protection never lifted: {:?}", puts.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        *puts.lock().unwrap(),
        vec![json!({"ProtectionEnabled": true, "ExpiresInMinutes": 2880}), json!({"ProtectionEnabled": false})]
    );
}

/// moto's server mode (PyPI `moto[server]`): a local stand-in of the AWS APIs, ECS included.
#[cfg(feature = "ecs")]
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

#[cfg(feature = "ecs")]
impl Moto {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (pip install 'moto[server]')");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto's server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// Runs `code` with `ecs`, a boto3 client of this server, and returns what it prints.
    fn ecs(&self, code: &str) -> String {
        let script = format!(
            "import boto3, json\necs = boto3.client('ecs', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test')\n{code}\n",
            self.endpoint
        );
        let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn desired_and_running(&self) -> (u64, u64) {
        let text = self.ecs(
            "s = ecs.describe_services(cluster='workers', services=['pdf-worker'])['services'][0]\n\
             print(json.dumps([s['desiredCount'], s['runningCount']]))",
        );
        let pair: Vec<u64> = serde_json::from_str(&text).unwrap();
        (pair[0], pair[1])
    }
}

#[cfg(feature = "ecs")]
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "ecs")]
#[tokio::test]
async fn the_ecs_provider_sets_the_service_count_and_reads_back_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ecs(
        "ecs.create_cluster(clusterName='workers')\n\
         ecs.register_task_definition(family='pdf-worker', containerDefinitions=[{'name': 'w', 'image': 'wharf', 'memory': 128}])\n\
         ecs.create_service(cluster='workers', serviceName='pdf-worker', taskDefinition='pdf-worker', desiredCount=0)",
    );
    let provider = r#"{ kind = "ecs", cluster = "workers", service = "pdf-worker", region = "us-east-1" }"#;
    let config = crate::common::pool_config(dir.path(), "pdf", 0, 3, provider);
    let server = TestServer::start_full(
        None,
        &["--config", config.to_str().unwrap()],
        &[
            ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(server.enqueue("pdf", json!({"kind": "render"})).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pool = server.get("/v1/pools/pdf").await.1;
        let (desired, running) = moto.desired_and_running();
        // Out to max in one call; the pool shows the running count ECS reports.
        if desired == 3 && pool["actual"] == json!(running) && running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "service {desired}/{running}, pool {pool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        assert_eq!(server.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await.0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pool = server.get("/v1/pools/pdf").await.1;
        if moto.desired_and_running().0 == 0 && pool["actual"] == 0 {
            assert_eq!(pool["last_change"]["reason"], "surplus", "{pool}");
            break;
        }
        assert!(Instant::now() < deadline, "never scaled in: {pool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
