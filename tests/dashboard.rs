//! The dashboard in a real headless Chromium: from the overview to a queue to a job, live
//! progress, cancel, a dead job found by its error, redriven and run; a reader's view; alarms;
//! a phone-sized screen; a thousand queues. Plus what the page is served with.

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
    b.click_on("#queues a[href='#/queues/pdf']").await.unwrap();
    // The queue page charts its last hour.
    b.wait("#charts figure svg").await.unwrap();
    // Queue → job (the first enqueued is the oldest: listed last, newest first).
    b.click_on(&format!("a[href='#/jobs/{watched}']")).await.unwrap();
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
    b.click_on("#cancel").await.unwrap();
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
    b.type_into("#filter-error", "smtp timeout\u{E007}").await.unwrap();
    b.wait_until(
        "only the job whose error matches listed",
        "return location.hash.includes('error=smtp') && document.querySelectorAll('tbody a[href^=\"#/jobs/\"]').length === 1",
    )
    .await
    .unwrap();
    b.click_on(&format!("a[href='#/jobs/{dead}']")).await.unwrap();
    assert!(b.text_of("#errors").await.unwrap().contains("SMTP timeout after 30s"));
    b.click_on("#redrive").await.unwrap();
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
    b.type_into("#signin[open] #token", "wharf_nope_nope\u{E007}").await.unwrap();
    b.wait_until(
        "the refusal shown",
        "return document.querySelector('#signin-error').textContent.includes('Unknown token')",
    )
    .await
    .unwrap();
    b.script("document.querySelector('#token').value = ''; return true").await.unwrap();
    b.type_into("#signin[open] #token", &format!("{}\u{E007}", created["token"].as_str().unwrap())).await.unwrap();
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
    b.type_into("#signin[open] #token", &format!("{}\u{E007}", server.admin_token.as_deref().unwrap())).await.unwrap();
    b.wait("#redrive").await.unwrap();
}

#[tokio::test]
async fn dead_jobs_matching_a_filter_are_redriven_together_and_the_policy_is_changed_in_place() {
    let server = TestServer::start().await;
    let mut timeouts = Vec::new();
    for error in ["smtp timeout", "smtp timeout", "550 mailbox full"] {
        let id = server.enqueue("mail", json!({"kind": "send", "max_attempts": 1})).await;
        let job = server.lease("mail", 1, 1_000).await.remove(0);
        let fail = json!({"lease_token": job["lease_token"], "error": error});
        assert_eq!(server.post(&format!("/v1/jobs/{id}/fail"), fail).await.0, 200);
        if error.starts_with("smtp") {
            timeouts.push(id);
        }
    }
    let b = browser().await;
    b.goto(&server.url("/#/queues/mail?state=dead&error=timeout")).await.unwrap();
    b.click_on("button.redrive-shown").await.unwrap();
    b.wait_until("the two redriven", "return document.querySelector('main p.muted').textContent.includes('ready 2')")
        .await
        .unwrap();
    for id in &timeouts {
        assert_eq!(server.state(id).await, "ready");
    }
    let (_, queue) = server.get("/v1/queues/mail").await;
    assert_eq!(queue["counts"]["dead"], 1, "the job the filter left out stays dead");

    // The policy: a bad value is refused with the server's reason; a good one is saved.
    b.click_on("#policy summary").await.unwrap();
    b.script("document.querySelector('#policy-max_attempts').value = ''; return true").await.unwrap();
    b.type_into("#policy-max_attempts", "0").await.unwrap();
    b.click_on("#policy-form button[type=submit]").await.unwrap();
    b.wait_until(
        "the refusal shown",
        "return document.querySelector('#policy [role=alert]').textContent.includes('max_attempts')",
    )
    .await
    .unwrap();
    assert_eq!(server.get("/v1/queues/mail").await.1["policy"]["max_attempts"], json!(queue["policy"]["max_attempts"]));
    b.script("document.querySelector('#policy-max_attempts').value = ''; return true").await.unwrap();
    b.type_into("#policy-max_attempts", "7").await.unwrap();
    b.type_into("#policy-concurrency", "3").await.unwrap();
    b.click_on("#policy-form button[type=submit]").await.unwrap();
    let mut policy = json!(null);
    for _ in 0..500 {
        policy = server.get("/v1/queues/mail").await.1["policy"].clone();
        if policy["concurrency"] == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!((policy["max_attempts"].as_u64(), policy["concurrency"].as_u64()), (Some(7), Some(3)), "{policy}");
}

#[tokio::test]
async fn the_overview_comes_back_by_itself_after_the_server_restarts() {
    let mut server = TestServer::start().await;
    server.enqueue("pdf", json!({"kind": "render"})).await;
    let b = browser().await;
    b.goto(&server.url("/")).await.unwrap();
    b.wait_until("live", "return document.querySelector('#live').classList.contains('on')").await.unwrap();
    server.restart();
    // Jobs enqueued after the restart show without a reload.
    server.enqueue("pdf", json!({"kind": "render"})).await;
    server.enqueue("video", json!({"kind": "cut"})).await;
    b.wait_until(
        "the new queue and count shown",
        "return !!document.querySelector(\"#queues a[href='#/queues/video']\") \
         && document.querySelector('#live').classList.contains('on')",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_queue_of_a_hundred_thousand_jobs_opens_like_one_of_ten() {
    let server = TestServer::start().await;
    for queue in ["small", "big"] {
        let total = if queue == "small" { 10 } else { 100_000 };
        for start in (0..total).step_by(1_000) {
            let jobs: Vec<_> =
                (start..(start + 1_000).min(total)).map(|i| json!({"kind": "k", "payload": {"n": i}})).collect();
            assert_eq!(server.post(&format!("/v1/queues/{queue}/jobs/batch"), json!({"jobs": jobs})).await.0, 201);
        }
    }
    let b = browser().await;
    let mut shown = Vec::new();
    for queue in ["small", "big", "small", "big"] {
        b.goto(&server.url(&format!("/?{queue}#/queues/{queue}"))).await.unwrap();
        b.wait_until("the jobs listed", "return document.querySelectorAll('tbody a[href^=\"#/jobs/\"]').length > 0")
            .await
            .unwrap();
        // One page of the newest, whatever the queue holds.
        let rows = b.script("return document.querySelectorAll('tbody a[href^=\"#/jobs/\"]').length").await.unwrap();
        assert_eq!(rows, if queue == "small" { 10 } else { 50 });
        shown.push(b.script("return performance.now()").await.unwrap().as_f64().unwrap());
    }
    eprintln!("queue page shown after (ms, small big small big): {shown:?}");
    assert!(b.find("#more").await.unwrap().is_some(), "the big queue pages on");
}

#[tokio::test]
async fn alarms_are_listed_with_their_state_and_history() {
    let server = TestServer::start().await;
    let rule = json!({"queue": "mail", "when": "dead > 0"});
    assert_eq!(server.put("/v1/alarms/mail-dead", rule).await.0, 201);
    let id = server.enqueue("mail", json!({"kind": "send", "max_attempts": 1})).await;
    let job = server.lease("mail", 1, 1_000).await.remove(0);
    let fail = json!({"lease_token": job["lease_token"], "error": "bounced"});
    assert_eq!(server.post(&format!("/v1/jobs/{id}/fail"), fail).await.0, 200);

    let b = browser().await;
    b.goto(&server.url("/#/alarms")).await.unwrap();
    b.wait("#alarm-rules").await.unwrap();
    // The leader evaluates every second: the page follows without a reload.
    b.wait_until(
        "the alarm shown firing, with its transition in the history",
        "return !!document.querySelector('#alarm-rules .state.firing') \
         && document.querySelector('#alarm-history tbody').textContent.includes('mail-dead')",
    )
    .await
    .unwrap();
    let rules = b.text_of("#alarm-rules").await.unwrap();
    assert!(rules.contains("dead > 0"), "{rules}");
    b.wait_until("the banner on every page", "return !document.querySelector('#alarms-banner').hidden").await.unwrap();
}

#[tokio::test]
async fn every_page_fits_a_phone_sized_screen() {
    let server = TestServer::start().await;
    let id = server
        .enqueue(
            "video-transcode-high-priority",
            json!({"kind": "transcode", "payload": {"src": "s3://bucket/very/long/key/name.mp4"}}),
        )
        .await;
    let job = server.lease("video-transcode-high-priority", 1, 1_000).await.remove(0);
    let beat = json!({"lease_token": job["lease_token"], "progress": {"percent": 30}});
    assert_eq!(server.post(&format!("/v1/jobs/{id}/heartbeat"), beat).await.0, 200);
    let b =
        Browser::start_phone(390, 844).await.unwrap_or_else(|why| panic!("cannot start a headless Chromium: {why}"));
    for (path, ready) in [
        ("/".to_owned(), "#queues a"),
        ("/#/queues/video-transcode-high-priority".to_owned(), "#charts svg"),
        (format!("/#/jobs/{id}"), "#progress"),
        ("/#/alarms".to_owned(), "#alarm-rules"),
    ] {
        b.goto(&server.url(&path)).await.unwrap();
        b.wait(ready).await.unwrap();
        assert_eq!(b.script("return window.innerWidth").await.unwrap(), 390);
        // Wide tables scroll inside their section; the page itself never scrolls sideways.
        let overflow = b
            .script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await
            .unwrap();
        assert_eq!(overflow, 0, "{path} is wider than a phone's screen");
    }
}

#[tokio::test]
async fn the_overview_shows_a_thousand_queues_and_two_hundred_workers() {
    let server = TestServer::start().await;
    let names: Vec<String> = (0..1_000).map(|i| format!("q{i:04}")).collect();
    for chunk in names.chunks(50) {
        let paths: Vec<String> = chunk.iter().map(|q| format!("/v1/queues/{q}")).collect();
        let puts = paths.iter().map(|path| server.put(path, json!({})));
        assert!(futures_util::future::join_all(puts).await.iter().all(|(status, _)| *status == 200));
    }
    for q in &names[..20] {
        server.enqueue(q, json!({"kind": "k"})).await;
    }
    let leases = (0..200).map(|w| {
        let body = json!({"worker_id": format!("worker-{w:03}"), "queues": [names[w % 1_000]], "max": 1, "wait_ms": 0});
        server.post("/v1/lease", body)
    });
    assert!(futures_util::future::join_all(leases).await.iter().all(|(status, _)| *status == 200));

    let b = browser().await;
    b.goto(&server.url("/")).await.unwrap();
    b.wait_until(
        "every queue and worker listed",
        "return document.querySelectorAll('#queues tbody tr').length === 1000 \
         && document.querySelectorAll('#workers tbody tr').length === 200",
    )
    .await
    .unwrap();
    // How long the first render took, from the start of navigation (the figure the docs give).
    let ms = b.script("return performance.now()").await.unwrap();
    eprintln!("overview with 1,000 queues and 200 workers shown {ms:.0} ms after navigation started");
    // It stays live: a job enqueued now shows in its queue's row without a reload.
    server.enqueue("q0999", json!({"kind": "k"})).await;
    b.wait_until(
        "the new job counted",
        "const row = [...document.querySelectorAll('#queues tbody tr')].find((r) => r.textContent.startsWith('q0999')); \
         return !!row && row.children[1].textContent === '1'",
    )
    .await
    .unwrap();
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
        // The SVG namespace is a name, never fetched.
        let body = answer.text().await.unwrap().replace("'http://www.w3.org/2000/svg'", "");
        assert!(!body.contains("https://") && !body.contains("http://"), "{path} names no other host");
        total += body.len();
    }
    assert!(total < 300 * 1024, "{total} bytes");
    assert_eq!(server.get("/assets/nope.js").await.0, 404);
}

/// Writes the screenshots the docs show, when asked: `WHARF_SCREENSHOTS=$PWD/docs/img cargo
/// test -p wharf --test integration -- dashboard::screenshots --ignored`.
#[tokio::test]
#[ignore = "writes files; run by hand to refresh the docs' screenshots"]
async fn screenshots() {
    let Ok(dir) = std::env::var("WHARF_SCREENSHOTS") else { return };
    let dir = std::path::PathBuf::from(dir);
    let server = TestServer::start().await;
    let rule = json!({"queue": "mail", "when": "dead > 0"});
    assert_eq!(server.put("/v1/alarms/mail-dead", rule).await.0, 201);
    for (queue, n) in [("pdf", 40), ("mail", 5), ("video", 3)] {
        for i in 0..n {
            server
                .enqueue(queue, json!({"kind": if i % 2 == 0 { "render" } else { "thumbnail" }, "payload": {"n": i}}))
                .await;
        }
    }
    // Some history for the charts: attempts that took a while, one failure.
    for round in 0..6u64 {
        let jobs = server.lease("pdf", 4, 1_000).await;
        tokio::time::sleep(std::time::Duration::from_millis(20 * (round + 1))).await;
        for (i, job) in jobs.iter().enumerate() {
            let id = job["id"].as_str().unwrap();
            let (outcome, body) = if round == 3 && i == 0 {
                ("fail", json!({"lease_token": job["lease_token"], "error": "ghostscript exited 1"}))
            } else {
                ("complete", json!({"lease_token": job["lease_token"]}))
            };
            assert_eq!(server.post(&format!("/v1/jobs/{id}/{outcome}"), body).await.0, 200);
        }
    }
    let running = server.lease("pdf", 2, 1_000).await;
    let beat = json!({"lease_token": running[0]["lease_token"], "progress": {"percent": 62, "stage": "rasterizing"}});
    let watched = running[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.post(&format!("/v1/jobs/{watched}/heartbeat"), beat).await.0, 200);
    let mail = server.lease("mail", 1, 1_000).await;
    let fail = json!({"lease_token": mail[0]["lease_token"], "error": "smtp timeout after 30s", "retryable": false});
    assert_eq!(server.post(&format!("/v1/jobs/{}/fail", mail[0]["id"].as_str().unwrap()), fail).await.0, 200);
    // Wait for the latency percentiles of the next 10-second reading.
    loop {
        let (_, stats) = server.get("/v1/queues/pdf/stats").await;
        if stats["points"].as_array().unwrap().iter().any(|p| p.get("run_ms").is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let b = browser().await;
    let shots = [
        ("dashboard-overview.png", "/".to_owned(), "#queues a"),
        ("dashboard-queue.png", "/#/queues/pdf".to_owned(), "#charts svg"),
        ("dashboard-job.png", format!("/#/jobs/{watched}"), "#progress"),
        ("dashboard-alarms.png", "/#/alarms".to_owned(), "#alarm-history"),
    ];
    for (name, path, ready) in shots {
        b.goto(&server.url(&path)).await.unwrap();
        b.wait(ready).await.unwrap();
        b.wait_until("the alarm banner shown", "return !document.querySelector('#alarms-banner').hidden")
            .await
            .unwrap();
        std::fs::write(dir.join(name), b.screenshot().await.unwrap()).unwrap();
    }
    let phone = Browser::start_phone(390, 844).await.unwrap();
    phone.goto(&server.url("/#/queues/pdf")).await.unwrap();
    phone.wait("#charts svg").await.unwrap();
    std::fs::write(dir.join("dashboard-phone.png"), phone.screenshot().await.unwrap()).unwrap();
}
