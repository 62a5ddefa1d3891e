//! A real headless Chromium for browser tests, driven through ChromeDriver's WebDriver
//! protocol (JSON over HTTP, a handful of calls): Debian's `chromium` and `chromium-driver`.
//!
//! Each [`Browser`] runs its own ChromeDriver on a free port with a fresh profile directory;
//! dropping it kills ChromeDriver and the browser it started (one process group).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn find_binary(names: &[&str]) -> Result<String, String> {
    for name in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let path = Path::new(dir).join(name);
            if path.exists() {
                return Ok(path.display().to_string());
            }
        }
    }
    Err(format!("none of {names:?} found: install Chromium (apt-get install -y chromium chromium-driver)"))
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a window of `width` × `height`.
    pub async fn start(width: u32, height: u32) -> Result<Browser, String> {
        Self::launch(width, height, None).await
    }

    /// A headless Chromium that presents itself as a phone: a `width` × `height` CSS-pixel
    /// screen (narrower than a desktop window may be) at a device pixel ratio of 2.
    pub async fn start_phone(width: u32, height: u32) -> Result<Browser, String> {
        let device = json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0, "touch": true}});
        Self::launch(width.max(500), height, Some(device)).await
    }

    async fn launch(width: u32, height: u32, mobile: Option<Value>) -> Result<Browser, String> {
        let chromium = find_binary(&["chromium", "chromium-browser"])?;
        let chromedriver = find_binary(&["chromedriver"])?;
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let mut command = Command::new(chromedriver);
        command.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| e.to_string())?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(answer) = ready
                && answer.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not become ready within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Without the network flags, Chromium reaches for Google's hosts at every start.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({"binary": chromium, "args": args});
        if let Some(device) = mobile {
            options["mobileEmulation"] = device;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }}});
        let mut browser = Browser { http, session: String::new(), driver, _profile: profile };
        let created = browser.call("POST", &format!("{base}/session"), Some(capabilities)).await?;
        let id = created["sessionId"].as_str().ok_or_else(|| format!("no session id in {created}"))?;
        browser.session = format!("{base}/session/{id}");
        Ok(browser)
    }

    async fn call(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
        let method: reqwest::Method = method.parse().map_err(|_| format!("bad method {method}"))?;
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.map_err(|e| format!("webdriver: {e}"))?;
        let status = answer.status();
        let value: Value = answer.json().await.map_err(|e| format!("webdriver answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("webdriver {status}: {}", value["value"]["message"]));
        }
        Ok(value["value"].clone())
    }

    async fn session(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("{}{path}", self.session), body).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.session("POST", "/url", Some(json!({"url": url}))).await.map(drop)
    }

    /// The first element matching `css` now, if any.
    pub async fn find(&self, css: &str) -> Result<Option<String>, String> {
        let found = self.session("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).await?;
        Ok(found.as_array().and_then(|a| a.first()).and_then(|e| e[ELEMENT].as_str()).map(str::to_owned))
    }

    /// Waits (up to 20 s) for an element matching `css`.
    pub async fn wait(&self, css: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(element) = self.find(css).await? {
                return Ok(element);
            }
            if Instant::now() > deadline {
                return Err(format!("no element {css:?} within 20 s; the page shows: {}", self.body_text().await?));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to 20 s) until `script` (a function body returning a value) returns true.
    pub async fn wait_until(&self, what: &str, script: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.script(script).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("never {what} within 20 s; the page shows: {}", self.body_text().await?));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks an element.
    pub async fn click(&self, element: &str) -> Result<(), String> {
        self.session("POST", &format!("/element/{element}/click"), Some(json!({}))).await.map(drop)
    }

    /// Clicks the first element matching `css`, once there. A live page may replace the
    /// element between finding and clicking it: then it is found again.
    pub async fn click_on(&self, css: &str) -> Result<(), String> {
        self.on_fresh(css, |element| async move { self.click(&element).await }).await
    }

    /// Types into the first element matching `css`, as [`Browser::click_on`] clicks.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        self.on_fresh(css, |element| async move { self.type_text(&element, text).await }).await
    }

    /// The visible text of the first element matching `css`, as [`Browser::click_on`] clicks.
    pub async fn text_of(&self, css: &str) -> Result<String, String> {
        self.on_fresh(css, |element| async move { self.text(&element).await }).await
    }

    async fn on_fresh<T, F, Fut>(&self, css: &str, act: F) -> Result<T, String>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let element = self.wait(css).await?;
            match act(element).await {
                Err(why) if why.contains("stale element") && Instant::now() < deadline => continue,
                done => return done,
            }
        }
    }

    /// Types into an element.
    pub async fn type_text(&self, element: &str, text: &str) -> Result<(), String> {
        self.session("POST", &format!("/element/{element}/value"), Some(json!({"text": text}))).await.map(drop)
    }

    /// An element's visible text.
    pub async fn text(&self, element: &str) -> Result<String, String> {
        Ok(self
            .session("GET", &format!("/element/{element}/text"), None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn script(&self, script: &str) -> Result<Value, String> {
        self.session("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// The page's visible text.
    pub async fn body_text(&self) -> Result<String, String> {
        Ok(self.script("return document.body.innerText").await?.as_str().unwrap_or_default().to_owned())
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        let encoded = self.session("GET", "/screenshot", None).await?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver and every browser process it started share its process group.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.wait();
    }
}
