//! The README's quickstart, executed: the block after `<!-- quickstart -->` runs in bash
//! against a real server, with `wharf` on the PATH.

use crate::common::{TestServer, wharf_bin};

fn quickstart_script() -> String {
    let readme = include_str!("../README.md");
    let start = readme.find("<!-- quickstart -->").expect("README marks its quickstart");
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a sh block follows the marker") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block ends");
    rest[open..open + close].to_owned()
}

#[tokio::test]
async fn the_readme_quickstart_works() {
    let server = TestServer::start().await;
    let script = quickstart_script()
        .replace("http://127.0.0.1:7070", &server.base)
        .replace("localhost:7070", server.base.trim_start_matches("http://"));
    let bin_dir = std::path::Path::new(wharf_bin()).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("WHARF_SERVER", &server.base)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "quickstart failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("succeeded"), "the quickstart's job ends succeeded:\n{stdout}");
}
