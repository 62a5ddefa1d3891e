//! The client commands.

use std::collections::BTreeMap;
use std::io::Read as _;

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt as _;
use serde_json::value::RawValue;

use super::output::{self, cut, table, when};
use super::{CancelArgs, ClientArgs, DeadArgs, EXIT_JOB_FAILED, EnqueueArgs, JobArgs, JobsArgs, QueueArg, RedriveArgs};
use crate::api::{EnqueueRequest, JobEventView, JobListQuery, JobView};
use crate::client::Client;
use crate::core::time::parse_duration;

fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&args.server)?)
}

/// The `--payload` value: inline JSON, `@FILE`, or `@-` for standard input.
fn read_payload(arg: &str) -> anyhow::Result<Box<RawValue>> {
    let text = match arg.strip_prefix('@') {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("--payload @-: cannot read standard input")?;
            text
        }
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("--payload: cannot read {path}"))?,
        None => arg.to_owned(),
    };
    RawValue::from_string(text.trim().to_owned()).map_err(|e| anyhow!("--payload is not valid JSON: {e}"))
}

fn millis(flag: &str, text: Option<&str>) -> anyhow::Result<Option<i64>> {
    text.map(|t| parse_duration(t).map(|d| d.as_millis() as i64).map_err(|e| anyhow!("{flag}: {e}"))).transpose()
}

pub async fn enqueue(args: EnqueueArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let mut metadata = BTreeMap::new();
    for entry in &args.metadata {
        let (key, value) = entry.split_once('=').ok_or_else(|| anyhow!("--meta {entry:?}: expected KEY=VALUE"))?;
        metadata.insert(key.to_owned(), value.to_owned());
    }
    let req = EnqueueRequest {
        kind: args.kind,
        payload: args.payload.as_deref().map(read_payload).transpose()?,
        priority: args.priority,
        delay_ms: millis("--delay", args.delay.as_deref())?,
        run_at: args.run_at,
        max_attempts: args.max_attempts,
        timeout_ms: millis("--timeout", args.timeout.as_deref())?,
        idempotency_key: args.key,
        metadata: (!metadata.is_empty()).then_some(metadata),
    };
    let (job, created) = client.enqueue(&args.queue, &req).await?;
    if args.client.json {
        output::json(&job)?;
    } else if args.quiet {
        println!("{}", job.id);
    } else {
        let verb = if created { "enqueued" } else { "already enqueued (same idempotency key)" };
        println!("{verb} {} on {} ({})", job.id, job.queue, job.state);
    }
    Ok(0)
}

fn print_job(job: &JobView) {
    let mut rows = vec![
        ("id", job.id.clone()),
        ("queue", job.queue.clone()),
        ("kind", job.kind.clone()),
        ("state", job.state.clone()),
        ("attempt", format!("{} of {}", job.attempt, job.max_attempts)),
        ("priority", job.priority.to_string()),
        ("created", job.created_at.clone()),
        ("run at", job.run_at.clone()),
    ];
    if let Some(at) = &job.started_at {
        rows.push(("started", at.clone()));
    }
    if let Some(at) = &job.finished_at {
        rows.push(("finished", at.clone()));
    }
    if let Some(worker) = &job.worker_id {
        rows.push(("worker", worker.clone()));
    }
    if job.cancel_requested {
        rows.push(("cancel", "requested".to_owned()));
    }
    rows.push(("payload", cut(job.payload.get(), 200)));
    if let Some(progress) = &job.progress {
        rows.push(("progress", cut(progress.get(), 200)));
    }
    if let Some(result) = &job.result {
        rows.push(("result", cut(result.get(), 200)));
    }
    for e in &job.errors {
        rows.push(("error", format!("attempt {} at {}: {}", e.attempt, when(&e.at), cut(&e.message, 160))));
    }
    let mut t = output::table(&["", ""]);
    t.set_header(Vec::<String>::new());
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    println!("{t}");
}

fn describe(event: &JobEventView) -> String {
    let mut line = format!("{}  {:<9}", when(&event.at), event.state);
    if event.event == "progress" {
        line = format!("{}  progress ", when(&event.at));
    }
    if event.state == "running" && event.event != "progress" {
        line.push_str(&format!(" attempt {}", event.attempt));
    }
    if let Some(p) = &event.progress {
        line.push_str(&cut(p.get(), 200));
    }
    if let Some(r) = &event.result {
        line.push_str(&format!(" result {}", cut(r.get(), 200)));
    }
    if let Some(e) = &event.error {
        line.push_str(&format!(" error: {}", cut(e, 160)));
    }
    if let (Some(at), "scheduled") = (&event.run_at, event.state.as_str()) {
        line.push_str(&format!(" (next attempt at {})", when(at)));
    }
    line
}

pub async fn job(args: JobArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    if !args.follow {
        let job = client.job(&args.id).await?;
        if args.client.json {
            output::json(&job)?
        } else {
            print_job(&job)
        }
        return Ok(0);
    }
    // Follow: print each change; reconnect with the last event id if the stream drops.
    let mut last_id: Option<String> = None;
    let mut state = String::new();
    let mut failures = 0;
    loop {
        let mut stream = match client.job_events(&args.id, last_id.as_deref()).await {
            Ok(stream) => stream,
            Err(err) if err.code().is_none() && failures < 10 => {
                failures += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * failures)).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        while let Some(item) = stream.next().await {
            let Ok(event) = item else { break };
            failures = 0;
            last_id = Some(event.id.clone());
            if args.client.json {
                println!("{}", event.data);
            }
            if event.event == "snapshot" {
                let job: JobView = serde_json::from_str(&event.data).context("unreadable snapshot event")?;
                if !args.client.json {
                    println!(
                        "{}  {:<9} {} {} attempt {}",
                        when(&job.created_at),
                        job.state,
                        job.kind,
                        job.id,
                        job.attempt
                    );
                    if let Some(p) = &job.progress {
                        println!("          progress  {}", cut(p.get(), 200));
                    }
                    if let Some(r) = &job.result {
                        println!("          result    {}", cut(r.get(), 200));
                    }
                }
                state = job.state;
            } else {
                let change: JobEventView = serde_json::from_str(&event.data).context("unreadable event")?;
                if !args.client.json {
                    println!("{}", describe(&change));
                }
                state = change.state;
            }
        }
        if matches!(state.as_str(), "succeeded" | "dead" | "canceled") {
            return Ok(if state == "succeeded" { 0 } else { EXIT_JOB_FAILED });
        }
        failures += 1;
        if failures > 10 {
            bail!("lost the progress stream of job {} and could not reconnect", args.id);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200 * failures)).await;
    }
}

pub async fn jobs(args: JobsArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let query = JobListQuery { state: args.state, kind: args.kind, limit: Some(args.limit), cursor: args.cursor };
    let page = client.jobs(&args.queue, &query).await?;
    if args.client.json {
        output::json(&page)?;
        return Ok(0);
    }
    let mut t = table(&["ID", "KIND", "STATE", "PRIORITY", "ATTEMPT", "CREATED", "FINISHED"]);
    for j in &page.jobs {
        t.add_row(vec![
            j.id.clone(),
            cut(&j.kind, 40),
            j.state.clone(),
            j.priority.to_string(),
            j.attempt.to_string(),
            when(&j.created_at),
            j.finished_at.as_deref().map(when).unwrap_or_default(),
        ]);
    }
    if page.jobs.is_empty() {
        println!("no jobs");
    } else {
        println!("{t}");
    }
    if let Some(cursor) = page.next_cursor {
        println!("more: --cursor {cursor}");
    }
    Ok(0)
}

pub async fn queues(args: ClientArgs) -> anyhow::Result<u8> {
    let client = client(&args)?;
    let list = client.queues().await?;
    if args.json {
        output::json(&list)?;
        return Ok(0);
    }
    if list.queues.is_empty() {
        println!("no queues yet (a queue is created by its first job)");
        return Ok(0);
    }
    let mut t =
        table(&["QUEUE", "READY", "SCHEDULED", "RUNNING", "SUCCEEDED", "DEAD", "CANCELED", "PAUSED", "OLDEST READY"]);
    for q in &list.queues {
        let c = &q.counts;
        t.add_row(vec![
            q.name.clone(),
            c.ready.to_string(),
            c.scheduled.to_string(),
            c.running.to_string(),
            c.succeeded.to_string(),
            c.dead.to_string(),
            c.canceled.to_string(),
            if q.policy.paused { "yes".into() } else { "no".into() },
            q.oldest_ready_at.as_deref().map(when).unwrap_or_default(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

pub async fn workers(args: ClientArgs) -> anyhow::Result<u8> {
    let client = client(&args)?;
    let list = client.workers().await?;
    if args.json {
        output::json(&list)?;
        return Ok(0);
    }
    if list.workers.is_empty() {
        println!("no workers connected");
        return Ok(0);
    }
    let mut t = table(&["WORKER", "HOST", "QUEUES", "RUNNING", "LAST SEEN"]);
    for w in &list.workers {
        t.add_row(vec![
            w.id.clone(),
            w.host.clone().unwrap_or_default(),
            w.queues.join(","),
            w.running.to_string(),
            when(&w.last_seen),
        ]);
    }
    println!("{t}");
    Ok(0)
}

pub async fn dead(args: DeadArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let query = JobListQuery { state: Some("dead".into()), kind: None, limit: Some(args.limit), cursor: None };
    let page = client.jobs(&args.queue, &query).await?;
    if args.client.json {
        output::json(&page)?;
        return Ok(0);
    }
    if page.jobs.is_empty() {
        println!("no dead jobs in {}", args.queue);
        return Ok(0);
    }
    let mut t = table(&["ID", "KIND", "ATTEMPTS", "DIED", "LAST ERROR"]);
    for j in &page.jobs {
        let last_error = client.job(&j.id).await.ok().and_then(|job| job.errors.last().map(|e| e.message.clone()));
        t.add_row(vec![
            j.id.clone(),
            cut(&j.kind, 30),
            j.attempt.to_string(),
            j.finished_at.as_deref().map(when).unwrap_or_default(),
            cut(&last_error.unwrap_or_default(), 60),
        ]);
    }
    println!("{t}");
    println!("redrive with: wharf redrive {}", args.queue);
    Ok(0)
}

pub async fn redrive(args: RedriveArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let ids = (!args.ids.is_empty()).then_some(args.ids);
    let answer = client.redrive(&args.queue, ids).await?;
    if args.client.json {
        output::json(&answer)?;
    } else {
        println!(
            "redrove {} dead job{} of {} back to ready",
            answer.redriven,
            if answer.redriven == 1 { "" } else { "s" },
            args.queue
        );
    }
    Ok(0)
}

pub async fn cancel(args: CancelArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let answer = client.cancel(&args.id).await?;
    if args.client.json {
        output::json(&answer)?;
    } else if answer.state == "canceled" {
        println!("canceled {}", answer.id);
    } else {
        println!("cancel requested for {} (running: its worker stops it at its next heartbeat)", answer.id);
    }
    Ok(0)
}

pub async fn pause(args: QueueArg, paused: bool) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let queue = client.queue_pause(&args.queue, paused).await?;
    if args.client.json {
        output::json(&queue)?;
    } else {
        println!("{} {}", if paused { "paused" } else { "resumed" }, queue.name);
    }
    Ok(0)
}
