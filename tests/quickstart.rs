//! The README's quickstart and workers sections, executed: the blocks after `<!-- quickstart -->`
//! and `<!-- workers -->` run in order in one bash against a real server, with `wharf` on the
//! PATH, as a reader pasting them would.

use crate::common::{TestServer, wharf_bin};

/// The first ```sh block after `marker` in the README.
fn readme_block(marker: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme.find(marker).unwrap_or_else(|| panic!("README marks {marker}"));
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a sh block follows the marker") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block ends");
    rest[open..open + close].to_owned()
}

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

#[tokio::test]
async fn the_readme_quickstart_and_workers_work() {
    let server = TestServer::start().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{}\n{}", readme_block("<!-- quickstart -->"), readme_block("<!-- workers -->"))
        .replace("http://127.0.0.1:7070", &server.base)
        .replace("localhost:7070", server.base.trim_start_matches("http://"))
        // The README's fixed ports may be taken by tests running alongside.
        .replace("127.0.0.1:3002", &format!("127.0.0.1:{}", free_port()))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{}", free_port()));
    let bin_dir = std::path::Path::new(wharf_bin()).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(root)
            .env("PATH", path)
            .env("WHARF_SERVER", &server.base)
            .output(),
    )
    .await
    .expect("the README's commands finish within two minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the README failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(!stderr.contains("error"), "no error on the way:\n{stderr}");
    // The manual job, the quickstart's second job and both workers' jobs all succeeded.
    let (_, queue) = server.get("/v1/queues/pdf").await;
    assert_eq!(queue["counts"]["succeeded"], 4, "{queue}\n{stdout}");
    assert!(stdout.contains(r#""state":"running""#), "the exec worker's health answer:\n{stdout}");
    assert!(stdout.contains(r#""pages": 3"#) || stdout.contains(r#""pages":3"#), "{stdout}");
}
