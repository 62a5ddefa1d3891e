//! The dashboard in a real headless Chromium: from the overview to a queue to a job, live
//! progress, cancel, and a dead job redriven and run. Plus what the page is served with.

use serde_json::json;
use wharf_testkit::browser::Browser;

use crate::common::TestServer;

async fn browser() -> Browser {
    Browser::start(1280, 900).await.unwrap_or_else(|why| panic!("cannot start a headless Chromium: {why}"))
}

#[tokio::test]
async fn an_operator_follows_a_job_from_the_overview_watches_its_progress_and_cancels_another() {
    let server = TestServer::start().await;
    let watched = server.enqueue("pdf", json!({"kind": "render", "payload": {"doc": 7}})).await;
    let other = server.enqueue("pdf", json!({"kind": "render"})).await;
    let b = browser().await;
    b.goto(&server.url("/")).await.unwrap();

    // Overview → queue.
    let queue = b.wait("#queues a[href='#/queues/pdf']").await.unwrap();
    b.click(&queue).await.unwrap();
    // Queue → job (the first enqueued is the oldest: listed last, newest first).
    let link = b.wait(&format!("a[href='#/jobs/{watched}']")).await.unwrap();
    b.click(&link).await.unwrap();
    b.wait("#progress").await.unwrap();
    assert!(b.body_text().await.unwrap().contains("\"doc\": 7"), "the payload is shown");

    // A worker takes it and reports progress: the bar follows without a reload.
    let jobs = server.lease("pdf", 1, 1_000).await;
    assert_eq!(jobs[0]["id"], watched.as_str());
    let token = jobs[0]["lease_token"].clone();
    for percent in [40, 80] {
        let beat = json!({"lease_token": token, "progress": {"percent": percent}});
        assert_eq!(server.post(&format!("/v1/jobs/{watched}/heartbeat"), beat).await.0, 200);
        b.wait_until(
            &format!("the bar at {percent}%"),
            &format!("return document.querySelector('#progress')?.getAttribute('aria-valuenow') === '{percent}'"),
        )
        .await
        .unwrap();
    }
    let done = json!({"lease_token": token, "result": {"pages": 3}});
    assert_eq!(server.post(&format!("/v1/jobs/{watched}/complete"), done).await.0, 200);
    b.wait_until("the job shown succeeded", "return !!document.querySelector('h1 .state.succeeded')").await.unwrap();
    assert!(b.body_text().await.unwrap().contains("\"pages\": 3"), "the result is shown");

    // Another job, canceled from its page.
    b.goto(&server.url(&format!("/#/jobs/{other}"))).await.unwrap();
    let cancel = b.wait("#cancel").await.unwrap();
    b.click(&cancel).await.unwrap();
    b.wait_until("the job shown canceled", "return !!document.querySelector('h1 .state.canceled')").await.unwrap();
    assert_eq!(server.state(&other).await, "canceled");
}

#[tokio::test]
async fn a_dead_job_is_found_by_its_error_inspected_redriven_and_seen_running_to_the_end() {
    let server = TestServer::start().await;
    let running = server.enqueue("mail", json!({"kind": "send"})).await;
    let bounced = server.enqueue("mail", json!({"kind": "send", "max_attempts": 1})).await;
    let dead = server.enqueue("mail", json!({"kind": "send", "max_attempts": 1})).await;
    let jobs = server.lease("mail", 3, 1_000).await;
    for (id, error) in [(&bounced, "550 mailbox full"), (&dead, "SMTP timeout after 30s")] {
        let job = jobs.iter().find(|j| j["id"] == id.as_str()).unwrap();
        let fail = json!({"lease_token": job["lease_token"], "error": error});
        assert_eq!(server.post(&format!("/v1/jobs/{id}/fail"), fail).await.0, 200);
    }

    let b = browser().await;
    b.goto(&server.url("/#/queues/mail")).await.unwrap();
    b.wait(&format!("a[href='#/jobs/{running}']")).await.unwrap();
    // Search by a piece of the error, in another case: only that dead job is listed.
    let search = b.wait("#filter-error").await.unwrap();
    b.type_text(&search, "smtp timeout\u{E007}").await.unwrap();
    b.wait_until(
        "only the job whose error matches listed",
        "return location.hash.includes('error=smtp') && document.querySelectorAll('tbody a[href^=\"#/jobs/\"]').length === 1",
    )
    .await
    .unwrap();
    let link = b.wait(&format!("a[href='#/jobs/{dead}']")).await.unwrap();
    b.click(&link).await.unwrap();
    let errors = b.wait("#errors").await.unwrap();
    assert!(b.text(&errors).await.unwrap().contains("SMTP timeout after 30s"));
    let redrive = b.wait("#redrive").await.unwrap();
    b.click(&redrive).await.unwrap();
    b.wait_until("the job shown ready", "return !!document.querySelector('h1 .state.ready')").await.unwrap();
    // A worker runs it: the page follows it to the end.
    let again = server.lease("mail", 1, 1_000).await;
    assert_eq!(again[0]["id"], dead.as_str());
    b.wait_until("the job shown running", "return !!document.querySelector('h1 .state.running')").await.unwrap();
    let done = json!({"lease_token": again[0]["lease_token"]});
    assert_eq!(server.post(&format!("/v1/jobs/{dead}/complete"), done).await.0, 200);
    b.wait_until("the job shown succeeded", "return !!document.querySelector('h1 .state.succeeded')").await.unwrap();
}

#[tokio::test]
async fn a_reader_token_signs_in_and_sees_everything_but_buttons_it_may_not_use() {
    let server = TestServer::start_secured(&[]).await;
    let dead = server.enqueue("mail", json!({"kind": "send", "max_attempts": 1})).await;
    let waiting = server.enqueue("mail", json!({"kind": "send"})).await;
    let jobs = server.lease("mail", 1, 1_000).await;
    let fail = json!({"lease_token": jobs[0]["lease_token"], "error": "bounced"});
    assert_eq!(server.post(&format!("/v1/jobs/{dead}/fail"), fail).await.0, 200);
    let (status, created) = server.post("/v1/tokens", json!({"role": "reader", "name": "ops"})).await;
    assert_eq!(status, 201, "{created}");

    let b = browser().await;
    b.goto(&server.url("/#/queues/mail")).await.unwrap();
    // Asked for a token; a wrong one is refused, the reader's accepted.
    let input = b.wait("#signin[open] #token").await.unwrap();
    b.type_text(&input, "wharf_nope_nope\u{E007}").await.unwrap();
    b.wait_until(
        "the refusal shown",
        "return document.querySelector('#signin-error').textContent.includes('Unknown token')",
    )
    .await
    .unwrap();
    b.script("document.querySelector('#token').value = ''; return true").await.unwrap();
    b.type_text(&input, &format!("{}\u{E007}", created["token"].as_str().unwrap())).await.unwrap();
    b.wait(&format!("a[href='#/jobs/{dead}']")).await.unwrap();
    b.wait_until("who signed in shown", "return document.querySelector('#who').textContent.includes('(reader)')")
        .await
        .unwrap();
    let buttons = "return [...document.querySelectorAll('main button')].map((b) => b.textContent).join(',')";
    assert_eq!(b.script(buttons).await.unwrap(), "Filter", "no pause, resume or redrive for a reader");
    for job in [&dead, &waiting] {
        b.goto(&server.url(&format!("/#/jobs/{job}"))).await.unwrap();
        b.wait("#progress").await.unwrap();
        b.wait_until("the job's page", &format!("return document.querySelector('h1').textContent.includes('{job}')"))
            .await
            .unwrap();
        assert_eq!(b.script(buttons).await.unwrap(), "", "no cancel or redrive for a reader");
    }
    // The same pages for the admin show the buttons.
    b.script("sessionStorage.clear(); return true").await.unwrap();
    b.goto(&server.url(&format!("/?again#/jobs/{dead}"))).await.unwrap();
    let input = b.wait("#signin[open] #token").await.unwrap();
    b.type_text(&input, &format!("{}\u{E007}", server.admin_token.as_deref().unwrap())).await.unwrap();
    b.wait("#redrive").await.unwrap();
}

#[tokio::test]
async fn the_page_is_embedded_small_and_allows_nothing_external() {
    let server = TestServer::start().await;
    let mut total = 0;
    for (path, kind) in [("/", "text/html"), ("/assets/app.js", "text/javascript"), ("/assets/app.css", "text/css")] {
        let answer = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        let headers = answer.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("http") && !csp.contains("unsafe"), "nothing external or inline: {csp}");
        let body = answer.text().await.unwrap();
        assert!(!body.contains("https://") && !body.contains("http://"), "{path} names no other host");
        total += body.len();
    }
    assert!(total < 300 * 1024, "{total} bytes");
    assert_eq!(server.get("/assets/nope.js").await.0, 404);
}

/// Writes the screenshots the docs show, when asked: `WHARF_SCREENSHOTS=docs/img cargo test
/// --test integration dashboard::screenshots -- --ignored`.
#[tokio::test]
#[ignore = "writes files; run by hand to refresh the docs' screenshots"]
async fn screenshots() {
    let Ok(dir) = std::env::var("WHARF_SCREENSHOTS") else { return };
    let dir = std::path::PathBuf::from(dir);
    let server = TestServer::start().await;
    let rule = json!({"queue": "mail", "when": "dead > 0"});
    assert_eq!(server.put("/v1/alarms/mail-dead", rule).await.0, 201);
    for (queue, n) in [("pdf", 12), ("mail", 5), ("video", 3)] {
        for i in 0..n {
            server
                .enqueue(queue, json!({"kind": if i % 2 == 0 { "render" } else { "thumbnail" }, "payload": {"n": i}}))
                .await;
        }
    }
    let running = server.lease("pdf", 2, 1_000).await;
    let beat = json!({"lease_token": running[0]["lease_token"], "progress": {"percent": 62, "stage": "rasterizing"}});
    let watched = running[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.post(&format!("/v1/jobs/{watched}/heartbeat"), beat).await.0, 200);
    let mail = server.lease("mail", 1, 1_000).await;
    let fail = json!({"lease_token": mail[0]["lease_token"], "error": "smtp timeout after 30s", "retryable": false});
    assert_eq!(server.post(&format!("/v1/jobs/{}/fail", mail[0]["id"].as_str().unwrap()), fail).await.0, 200);
    let b = browser().await;
    for (name, path, ready) in [
        ("dashboard-overview.png", "/".to_owned(), "#queues a".to_owned()),
        ("dashboard-queue.png", "/#/queues/pdf".to_owned(), "tbody a".to_owned()),
        ("dashboard-job.png", format!("/#/jobs/{watched}"), "#progress".to_owned()),
    ] {
        b.goto(&server.url(&path)).await.unwrap();
        b.wait(&ready).await.unwrap();
        b.wait_until("the alarm banner shown", "return !document.querySelector('#alarms-banner').hidden")
            .await
            .unwrap();
        std::fs::write(dir.join(name), b.screenshot().await.unwrap()).unwrap();
    }
}
