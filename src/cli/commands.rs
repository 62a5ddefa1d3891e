//! The client commands.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::value::RawValue;

use super::output::{self, age, cut, table, when};
use super::{
    CancelArgs, ClientArgs, DeadArgs, EXIT_JOB_FAILED, EnqueueArgs, JobArgs, JobsArgs, QueueArg, QueueSetArgs,
    RedriveArgs, TokenCreateArgs, TokenRevokeArgs,
};
use crate::api::{
    EnqueueRequest, JobEventView, JobListQuery, JobView, QueuePolicyRequest, QueueView, TokenCreateRequest,
};
use crate::client::Client;
use crate::core::time::parse_duration;
use crate::outln;

fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(args.client()?)
}

/// The `--payload` value: inline JSON, `@FILE`, or `-` (or `@-`) for standard input.
fn read_payload(arg: &str) -> anyhow::Result<Box<RawValue>> {
    let text = if arg == "-" || arg == "@-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("--payload -: cannot read standard input")?;
        text
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("--payload: cannot read {path}"))?
    } else {
        arg.to_owned()
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
        outln!("{}", job.id)?;
    } else {
        let verb = if created { "enqueued" } else { "already enqueued (same idempotency key)" };
        // A job waiting on a paused queue is `ready` but will not run: say so.
        let paused = job.state == "ready" && client.queue(&job.queue).await.is_ok_and(|q| q.policy.paused);
        if paused {
            outln!(
                "{verb} {} on {} (ready, but the queue is paused: `wharf queue resume {}` starts it)",
                job.id,
                job.queue,
                job.queue
            )?;
        } else {
            outln!("{verb} {} on {} ({})", job.id, job.queue, job.state)?;
        }
    }
    Ok(0)
}

fn print_job(job: &JobView) -> std::io::Result<()> {
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
    rows.push(("payload", job.payload.get().to_owned()));
    if let Some(progress) = &job.progress {
        rows.push(("progress", progress.get().to_owned()));
    }
    if let Some(result) = &job.result {
        rows.push(("result", result.get().to_owned()));
    }
    for e in &job.errors {
        rows.push(("error", format!("attempt {} at {}: {}", e.attempt, when(&e.at), e.message)));
    }
    // One line per field, cut to the terminal's width (or 200 characters when piped).
    let width = output::terminal_width().map_or(200, |w| w.saturating_sub(10).max(20));
    for (key, value) in rows {
        outln!("{key:<9} {}", cut(&value, width))?;
    }
    Ok(())
}

/// A line for one change on a job's stream.
fn describe(event: &JobEventView) -> String {
    let mut line = if event.event == "progress" {
        format!("{}  progress  {}", when(&event.at), event.progress.as_ref().map_or("", |p| p.get()))
    } else {
        format!("{}  {:<9}", when(&event.at), event.state)
    };
    if event.state == "running" && event.event != "progress" {
        line.push_str(&format!(" attempt {}", event.attempt));
    }
    if let Some(r) = &event.result {
        line.push_str(&format!(" result {}", cut(r.get(), 200)));
    }
    if let Some(e) = &event.error {
        line.push_str(&format!(" error: {}", cut(e, 200)));
    }
    if let (Some(at), "scheduled") = (&event.run_at, event.state.as_str()) {
        line.push_str(&format!(" (next attempt at {})", when(at)));
    }
    line
}

/// The lines for the `snapshot` that opens a job's stream: where the job stands now.
fn describe_snapshot(job: &JobView, with_progress: bool) -> Vec<String> {
    let mut lines =
        vec![format!("{}  {:<9} {} {} attempt {}", when(&job.created_at), job.state, job.kind, job.id, job.attempt)];
    if let (Some(p), true) = (&job.progress, with_progress) {
        lines.push(format!("          progress  {}", cut(p.get(), 200)));
    }
    if let Some(r) = &job.result {
        lines.push(format!("          result    {}", cut(r.get(), 200)));
    }
    // A job that already failed for good shows why.
    if matches!(job.state.as_str(), "dead" | "canceled")
        && let Some(e) = job.errors.last()
    {
        lines.push(format!("          error     attempt {}: {}", e.attempt, cut(&e.message, 200)));
    }
    lines
}

fn is_terminal_state(state: &str) -> bool {
    matches!(state, "succeeded" | "dead" | "canceled")
}

pub async fn job(args: JobArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    if args.follow {
        let reconnect_for = parse_duration(&args.reconnect_for).map_err(|e| anyhow!("--reconnect-for: {e}"))?;
        return follow(&client, &args.id, args.client.json, reconnect_for).await;
    }
    let job = client.job(&args.id).await?;
    if args.client.json {
        output::json(&job)?
    } else {
        print_job(&job)?
    }
    Ok(0)
}

/// `wharf job ID --follow`: prints each change until the job ends, reconnecting with the last
/// event id when the stream drops, for up to `reconnect_for` without an answer.
async fn follow(client: &Client, id: &str, json: bool, reconnect_for: Duration) -> anyhow::Result<u8> {
    let mut view = FollowView::new(json);
    let mut last_id: Option<String> = None;
    let mut state = String::new();
    let mut lost_since: Option<Instant> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        match client.job_events(id, last_id.as_deref()).await {
            Ok(mut stream) => {
                if lost_since.take().is_some() {
                    eprintln!("reconnected");
                    delay = Duration::from_millis(100);
                }
                while let Some(Ok(event)) = stream.next().await {
                    last_id = Some(event.id.clone());
                    state = view.show(&event.event, &event.data)?;
                }
            }
            // The server answered and refused (an unknown job, say): reconnecting won't help.
            Err(err) if err.code().is_some() => return Err(err.into()),
            Err(_) => {}
        }
        if is_terminal_state(&state) {
            view.finish();
            return Ok(if state == "succeeded" { 0 } else { EXIT_JOB_FAILED });
        }
        // The stream ended before the job did: the server went away or restarted.
        let since = *lost_since.get_or_insert_with(|| {
            view.suspend();
            eprintln!(
                "lost the connection to {}; reconnecting (for up to {})",
                client.base(),
                humantime::format_duration(reconnect_for)
            );
            Instant::now()
        });
        if since.elapsed() >= reconnect_for {
            bail!(
                "could not reach the server at {} for {}; job {id} was {}: `wharf job {id}` shows it once the server is back",
                client.base(),
                humantime::format_duration(reconnect_for),
                if state.is_empty() { "in an unknown state" } else { &state },
            );
        }
        tokio::time::sleep(delay.min(reconnect_for.saturating_sub(since.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// How `--follow` shows a job: one line per event (piped, or `--json`), or on a terminal a
/// progress bar (percent and stage) with the state changes printed above it.
struct FollowView {
    json: bool,
    terminal: bool,
    bar: Option<ProgressBar>,
}

impl FollowView {
    fn new(json: bool) -> Self {
        FollowView { json, terminal: !json && output::is_terminal(), bar: None }
    }

    /// Shows one event; returns the job's state after it.
    fn show(&mut self, event: &str, data: &str) -> anyhow::Result<String> {
        if self.json {
            outln!("{data}")?;
        }
        if event == "snapshot" {
            let job: JobView = serde_json::from_str(data).context("unreadable snapshot event")?;
            if !self.json {
                let bar = job.state == "running" && self.terminal;
                for line in describe_snapshot(&job, !bar) {
                    self.line(&line)?;
                }
                if let (true, Some(progress)) = (bar, &job.progress) {
                    self.progress(progress);
                }
            }
            return Ok(job.state);
        }
        let change: JobEventView = serde_json::from_str(data).context("unreadable event")?;
        if self.json {
            return Ok(change.state);
        }
        match (&change.progress, self.terminal) {
            (Some(progress), true) if change.event == "progress" => self.progress(progress),
            _ => {
                if change.event != "progress" {
                    // A new attempt or an ending: the bar of the last attempt is done with.
                    self.suspend();
                }
                self.line(&describe(&change))?;
            }
        }
        Ok(change.state)
    }

    fn line(&self, text: &str) -> std::io::Result<()> {
        match &self.bar {
            Some(bar) => {
                bar.println(text);
                Ok(())
            }
            None => outln!("{text}"),
        }
    }

    /// Moves the bar to the progress reported: `percent` (or `pct`) 0–100, and `stage` and
    /// `message` as its text; other progress JSON shows as text.
    fn progress(&mut self, progress: &RawValue) {
        if !self.terminal {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stdout());
            if let Ok(style) = ProgressStyle::with_template("          {bar:30} {pos:>3}%  {msg}") {
                bar.set_style(style);
            }
            bar
        });
        let value: serde_json::Value = serde_json::from_str(progress.get()).unwrap_or_default();
        let percent = ["percent", "pct"].iter().find_map(|k| value.get(k).and_then(serde_json::Value::as_f64));
        let text: Vec<&str> =
            ["stage", "message"].iter().filter_map(|k| value.get(k).and_then(serde_json::Value::as_str)).collect();
        if !text.is_empty() {
            bar.set_message(text.join(": "));
        } else if percent.is_none() {
            bar.set_message(cut(progress.get(), 60));
        }
        if let Some(percent) = percent {
            bar.set_position(percent.clamp(0.0, 100.0) as u64);
        }
    }

    /// Takes the bar off the screen.
    fn suspend(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn finish(&mut self) {
        self.suspend();
    }
}

pub async fn jobs(args: JobsArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let query = JobListQuery {
        state: args.state,
        kind: args.kind,
        error: args.error,
        created_after: args.created_after,
        created_before: args.created_before,
        limit: Some(args.limit),
        cursor: args.cursor,
    };
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
        outln!("no jobs")?;
    } else {
        outln!("{t}")?;
    }
    if let Some(cursor) = page.next_cursor {
        outln!("more: --cursor {cursor}")?;
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
        outln!("no queues yet (a queue is created by its first job)")?;
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
            q.oldest_ready_at.as_deref().map(age).unwrap_or_default(),
        ]);
    }
    outln!("{t}")?;
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
        outln!("no workers connected")?;
        return Ok(0);
    }
    let mut t = table(&["WORKER", "STATE", "WHERE", "QUEUES", "RUNNING", "LAST SEEN"]);
    for w in &list.workers {
        let place = match (&w.task_arn, &w.pod, &w.host, w.pid) {
            (Some(task), _, _, _) => task.rsplit('/').next().unwrap_or(task).to_owned(),
            (None, Some(pod), _, _) => pod.clone(),
            (None, None, Some(host), Some(pid)) => format!("{host}:{pid}"),
            (None, None, host, _) => host.clone().unwrap_or_default(),
        };
        let running = match w.capacity {
            Some(capacity) => format!("{}/{capacity}", w.running),
            None => w.running.to_string(),
        };
        t.add_row(vec![
            w.id.clone(),
            w.state.clone(),
            place,
            w.queues.join(","),
            running,
            format!("{} ago", age(&w.last_seen)),
        ]);
    }
    outln!("{t}")?;
    Ok(0)
}

pub async fn worker_drain(args: ClientArgs, id: &str) -> anyhow::Result<u8> {
    let client = client(&args)?;
    let worker = client.worker_drain(id).await?;
    if args.json {
        output::json(&worker)?;
    } else {
        outln!("asked worker {} to drain ({} running); it stops once they are done", worker.id, worker.running)?;
    }
    Ok(0)
}

pub async fn pools(args: ClientArgs) -> anyhow::Result<u8> {
    let client = client(&args)?;
    let list = client.pools().await?;
    if args.json {
        output::json(&list)?;
        return Ok(0);
    }
    if list.pools.is_empty() {
        outln!("no pools (declare them as [[pool]] in the config file of wharf serve)")?;
        return Ok(0);
    }
    let mut t = table(&["POOL", "PROVIDER", "BACKLOG", "DESIRED", "ACTUAL", "BUSY", "IDLE", "MIN-MAX", "LAST CHANGE"]);
    for p in &list.pools {
        let change = match &p.last_change {
            Some(c) => format!("{} → {} ({}, {} ago)", c.from, c.desired, c.reason, age(&c.at)),
            None => String::new(),
        };
        let actual =
            if p.draining > 0 { format!("{} (+{} draining)", p.actual, p.draining) } else { p.actual.to_string() };
        t.add_row(vec![
            p.name.clone(),
            p.provider.clone(),
            p.backlog.to_string(),
            p.desired.to_string(),
            actual,
            p.busy.to_string(),
            p.idle.to_string(),
            format!("{}-{}", p.min, p.max),
            change,
        ]);
    }
    outln!("{t}")?;
    for p in list.pools.iter().filter(|p| p.error.is_some()) {
        outln!("pool {}: {}", p.name, p.error.as_deref().unwrap_or_default())?;
    }
    Ok(0)
}

pub async fn alarms(args: ClientArgs) -> anyhow::Result<u8> {
    let client = client(&args)?;
    let list = client.alarms().await?;
    if args.json {
        output::json(&list)?;
        return Ok(0);
    }
    if list.alarms.is_empty() {
        outln!("no alarms (declare them as [[alarm]] in the config file, or PUT /v1/alarms/NAME)")?;
        return Ok(0);
    }
    let mut t = table(&["ALARM", "STATE", "QUEUE", "WHEN", "VALUE", "SINCE", "UNDELIVERED"]);
    for a in &list.alarms {
        // One line per queue of a `*` rule; a rule not evaluated yet shows its rule alone.
        if a.queues.is_empty() {
            t.add_row(vec![
                a.name.clone(),
                a.state.clone(),
                a.queue.clone(),
                a.when.clone(),
                String::new(),
                String::new(),
                a.undelivered.to_string(),
            ]);
        }
        for q in &a.queues {
            t.add_row(vec![
                a.name.clone(),
                q.state.clone(),
                q.queue.clone(),
                a.when.clone(),
                q.value.to_string(),
                format!("{} ago", age(&q.since)),
                a.undelivered.to_string(),
            ]);
        }
    }
    outln!("{t}")?;
    Ok(0)
}

pub async fn dead(args: DeadArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let query = JobListQuery {
        state: Some("dead".into()),
        error: args.error,
        limit: Some(args.limit),
        ..JobListQuery::default()
    };
    let page = client.jobs(&args.queue, &query).await?;
    if args.client.json {
        output::json(&page)?;
        return Ok(0);
    }
    if page.jobs.is_empty() {
        outln!("no dead jobs in {}", args.queue)?;
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
    outln!("{t}")?;
    outln!("redrive with: wharf redrive {}", args.queue)?;
    Ok(0)
}

pub async fn redrive(args: RedriveArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let ids = (!args.ids.is_empty()).then_some(args.ids);
    let answer = client.redrive(&args.queue, ids).await?;
    if args.client.json {
        output::json(&answer)?;
    } else {
        outln!(
            "redrove {} dead job{} of {} back to ready",
            answer.redriven,
            if answer.redriven == 1 { "" } else { "s" },
            args.queue
        )?;
    }
    Ok(0)
}

pub async fn cancel(args: CancelArgs) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let answer = client.cancel(&args.id).await?;
    if args.client.json {
        output::json(&answer)?;
    } else if answer.state == "canceled" {
        outln!("canceled {}", answer.id)?;
    } else {
        outln!("cancel requested for {} (running: its worker stops it at its next heartbeat)", answer.id)?;
    }
    Ok(0)
}

pub async fn pause(args: QueueArg, paused: bool) -> anyhow::Result<u8> {
    let client = client(&args.client)?;
    let queue = client.queue_pause(&args.queue, paused).await?;
    if args.client.json {
        output::json(&queue)?;
    } else {
        outln!("{} {}", if paused { "paused" } else { "resumed" }, queue.name)?;
    }
    Ok(0)
}

/// Prints a queue: counts per state, then its policy.
fn print_queue(q: &QueueView) -> std::io::Result<()> {
    let c = &q.counts;
    let p = &q.policy;
    let ms = |ms: u64| humantime::format_duration(Duration::from_millis(ms)).to_string();
    outln!("queue        {}{}", q.name, if p.paused { " (paused)" } else { "" })?;
    outln!(
        "jobs         {} ready, {} scheduled, {} running, {} succeeded, {} dead, {} canceled",
        c.ready,
        c.scheduled,
        c.running,
        c.succeeded,
        c.dead,
        c.canceled
    )?;
    if let Some(at) = &q.oldest_ready_at {
        outln!("oldest ready {} ago", age(at))?;
    }
    outln!("lease        {}", ms(p.lease_ms))?;
    outln!("max attempts {}", p.max_attempts)?;
    outln!(
        "backoff      base {}, factor {}, cap {} (full jitter)",
        ms(p.backoff.base_ms),
        p.backoff.factor,
        ms(p.backoff.cap_ms)
    )?;
    outln!("retention    {}", ms(p.retention_ms))?;
    outln!("concurrency  {}", p.concurrency.map_or("no limit".to_owned(), |n| n.to_string()))?;
    outln!("rate         {}", p.rate.map_or("no limit".to_owned(), |r| format!("{r}/s")))?;
    outln!("max ready    {}", p.max_ready.map_or("no limit".to_owned(), |n| n.to_string()))?;
    Ok(())
}

pub async fn token_create(args: TokenCreateArgs) -> anyhow::Result<u8> {
    let request = TokenCreateRequest {
        role: args.role,
        queues: (!args.queues.is_empty()).then_some(args.queues),
        name: args.name,
        rate: args.rate,
    };
    let created = client(&args.client)?.token_create(&request).await?;
    if args.client.json {
        output::json(&created)?;
    } else {
        let queues = created.view.queues.as_ref().map_or("every queue".to_owned(), |q| q.join(", "));
        outln!("{}", created.token)?;
        eprintln!(
            "created {} token {} for {queues}; it is shown only now: keep it in a secret store",
            created.view.role, created.view.id
        );
    }
    Ok(0)
}

pub async fn token_list(args: ClientArgs) -> anyhow::Result<u8> {
    let list = client(&args)?.token_list().await?;
    if args.json {
        output::json(&list)?;
        return Ok(0);
    }
    if list.tokens.is_empty() {
        outln!("no tokens")?;
        return Ok(0);
    }
    let mut t = table(&["ID", "NAME", "ROLE", "QUEUES", "RATE", "CREATED"]);
    for token in &list.tokens {
        t.add_row(vec![
            token.id.clone(),
            token.name.clone().unwrap_or_default(),
            token.role.clone(),
            token.queues.as_ref().map_or("*".to_owned(), |q| q.join(",")),
            token.rate.map_or(String::new(), |r| format!("{r}/s")),
            when(&token.created_at),
        ]);
    }
    outln!("{t}")?;
    Ok(0)
}

pub async fn token_revoke(args: TokenRevokeArgs) -> anyhow::Result<u8> {
    client(&args.client)?.token_revoke(&args.id).await?;
    if !args.client.json {
        outln!("revoked {}", args.id)?;
    }
    Ok(0)
}

pub async fn queue_delete(args: QueueArg) -> anyhow::Result<u8> {
    client(&args.client)?.queue_delete(&args.queue).await?;
    if !args.client.json {
        outln!("deleted {}", args.queue)?;
    }
    Ok(0)
}

pub async fn queue_show(args: QueueArg) -> anyhow::Result<u8> {
    let queue = client(&args.client)?.queue(&args.queue).await?;
    if args.client.json {
        output::json(&queue)?
    } else {
        print_queue(&queue)?
    }
    Ok(0)
}

/// `none` (no limit) or a number.
fn limit<T: std::str::FromStr>(flag: &str, text: Option<&str>) -> anyhow::Result<Option<Option<T>>> {
    match text.map(str::trim) {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(n) => n.parse().map(|n| Some(Some(n))).map_err(|_| anyhow!("{flag}: {n:?} is not a number or none")),
    }
}

pub async fn queue_set(args: QueueSetArgs) -> anyhow::Result<u8> {
    let request = QueuePolicyRequest {
        lease_ms: millis("--lease", args.lease.as_deref())?,
        max_attempts: args.max_attempts,
        backoff_base_ms: millis("--backoff-base", args.backoff_base.as_deref())?,
        backoff_factor: args.backoff_factor,
        backoff_cap_ms: millis("--backoff-cap", args.backoff_cap.as_deref())?,
        retention_ms: millis("--retention", args.retention.as_deref())?,
        concurrency: limit("--concurrency", args.concurrency.as_deref())?,
        rate: limit("--rate", args.rate.as_deref())?,
        paused: None,
        max_ready: limit("--max-ready", args.max_ready.as_deref())?,
    };
    let queue = client(&args.client)?.queue_put(&args.queue, &request).await?;
    if args.client.json {
        output::json(&queue)?
    } else {
        print_queue(&queue)?
    }
    Ok(0)
}
