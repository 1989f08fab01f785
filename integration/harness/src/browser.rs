//! A headless Chromium (Debian's `chromium`) driven over the DevTools protocol: the status
//! page test loads the page in it, and the bench times its first paint. `make test` installs
//! the package when it is missing.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// A headless Chromium with one page, killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    page: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// DevTools events read while waiting for a command's result, for [`Browser::wait_event`].
    events: Vec<Value>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra command-line flags (e.g. `--host-resolver-rules=…`).
    pub fn start_with(flags: &[&str]) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1400,900",
            ])
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium (make test installs Debian's package)");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut port = None;
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                break;
            }
        }
        let port = port.expect("chromium printed its DevTools address");
        let deadline = Instant::now() + Duration::from_secs(20);
        let page_url = loop {
            let targets = crate::http(port, "GET", "/json/list", None)
                .and_then(|r| r.body.as_array().cloned())
                .unwrap_or_default();
            if let Some(url) = targets
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break url.to_owned();
            }
            assert!(Instant::now() < deadline, "no page target in chromium");
            thread::sleep(Duration::from_millis(100));
        };
        let (page, _) = tungstenite::connect(page_url).expect("connect to the page");
        Browser {
            child,
            _profile: profile,
            page,
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Sends one DevTools command and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.result(method, id)
    }

    /// Sends one DevTools command without waiting; its id, for [`Browser::result`].
    pub fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        self.page.send(Message::Text(text)).unwrap();
        id
    }

    /// The result of command `id` (events read meanwhile are kept).
    pub fn result(&mut self, method: &str, id: u64) -> Value {
        loop {
            let message = self.read();
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// The next DevTools event named `method` (e.g. `Fetch.requestPaused`): its params.
    pub fn wait_event(&mut self, method: &str) -> Value {
        if let Some(at) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(at)["params"].clone();
        }
        loop {
            let message = self.read();
            if message["method"] == method {
                return message["params"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    fn read(&mut self) -> Value {
        loop {
            if let Message::Text(text) = self.page.read().unwrap() {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    /// Navigates to `url` and answers that navigation itself with `html`, as if the server
    /// at `url` had (what a page served by an attacker before a DNS rebinding looks like);
    /// the page's own requests then go where the name resolves.
    pub fn open_served(&mut self, url: &str, html: &str) {
        self.call("Page.enable", json!({}));
        self.call(
            "Fetch.enable",
            json!({"patterns": [{"urlPattern": url, "requestStage": "Request"}]}),
        );
        let navigate = self.send("Page.navigate", json!({"url": url}));
        let paused = self.wait_event("Fetch.requestPaused");
        self.call(
            "Fetch.fulfillRequest",
            json!({
                "requestId": paused["requestId"],
                "responseCode": 200,
                "responseHeaders": [{"name": "Content-Type", "value": "text/html"}],
                "body": base64::engine::general_purpose::STANDARD.encode(html),
            }),
        );
        self.result("Page.navigate", navigate);
        self.call("Fetch.disable", json!({}));
    }

    /// Answers the page's requests to URLs matching `pattern` (a DevTools URL pattern, `*`
    /// for any text) with the server's own answer, its JSON body passed through `rewrite`
    /// (given the URL), until `expression` holds in the page (20 s); its value. What a newer
    /// server would answer, from the real one. Interception goes on until
    /// [`Browser::stop_rewriting`].
    pub fn wait_rewriting(
        &mut self,
        pattern: &str,
        rewrite: &dyn Fn(&str, &mut Value),
        what: &str,
        expression: &str,
    ) -> Value {
        self.call(
            "Fetch.enable",
            json!({"patterns": [{"urlPattern": pattern, "requestStage": "Response"}]}),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(expression);
            if !value.is_null() && value != json!(false) {
                return value;
            }
            assert!(Instant::now() < deadline, "not within 20 s: {what}");
            // The page asks every 2 s: a paused request comes soon.
            let paused = self.wait_event("Fetch.requestPaused");
            let id = paused["requestId"].clone();
            let answer = self.call("Fetch.getResponseBody", json!({"requestId": id}));
            let raw = answer["body"].as_str().unwrap_or_default();
            let text = if answer["base64Encoded"] == true {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                raw.to_owned()
            };
            let body = match serde_json::from_str::<Value>(&text) {
                Ok(mut json) => {
                    rewrite(paused["request"]["url"].as_str().unwrap_or_default(), &mut json);
                    json.to_string()
                }
                Err(_) => text,
            };
            let headers: Vec<Value> = paused["responseHeaders"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|h| {
                    let name = h["name"].as_str().unwrap_or_default().to_ascii_lowercase();
                    name != "content-length" && name != "content-encoding"
                })
                .collect();
            self.call(
                "Fetch.fulfillRequest",
                json!({
                    "requestId": id,
                    "responseCode": paused["responseStatusCode"],
                    "responseHeaders": headers,
                    "body": base64::engine::general_purpose::STANDARD.encode(body),
                }),
            );
        }
    }

    /// Ends [`Browser::wait_rewriting`]: requests go to the server untouched again.
    pub fn stop_rewriting(&mut self) {
        self.call("Fetch.disable", json!({}));
        self.events.retain(|e| e["method"] != "Fetch.requestPaused");
    }

    /// Evaluates `expression` in the page; its value (JSON-serialisable).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is neither null nor false (20 s); its value.
    pub fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(expression);
            if !value.is_null() && value != json!(false) {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self.eval("document.body.innerText.slice(0, 2000)");
                panic!(
                    "not within 20 s: {what}; the page shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Navigates to `url` and waits until `expression` holds in the page.
    pub fn open(&mut self, url: &str, what: &str, expression: &str) -> Value {
        self.call("Page.enable", json!({}));
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(what, expression)
    }

    /// Decodes `png` in this browser (call it on a blank page) and measures it: `width`,
    /// `height`, `spread` (the standard deviation of its brightness, 0 for a blank image) and
    /// `near` (how many pixels are within 24 of `rgb` in each channel).
    pub fn measure_png(&mut self, png: &[u8], rgb: [u8; 3]) -> Value {
        let data = base64::engine::general_purpose::STANDARD.encode(png);
        let [r, g, b] = rgb;
        self.eval(&format!(
            r#"(async () => {{
  const bytes = Uint8Array.from(atob("{data}"), c => c.charCodeAt(0));
  const image = await createImageBitmap(new Blob([bytes], {{type: "image/png"}}));
  const canvas = new OffscreenCanvas(image.width, image.height);
  const g = canvas.getContext("2d");
  g.drawImage(image, 0, 0);
  const px = g.getImageData(0, 0, image.width, image.height).data;
  let n = 0, sum = 0, sq = 0, near = 0;
  for (let i = 0; i < px.length; i += 4) {{
    const l = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
    n++; sum += l; sq += l * l;
    if (Math.abs(px[i] - {r}) < 24 && Math.abs(px[i + 1] - {g}) < 24 && Math.abs(px[i + 2] - {b}) < 24) near++;
  }}
  const mean = sum / n;
  return {{width: image.width, height: image.height, spread: Math.sqrt(sq / n - mean * mean), near}};
}})()"#
        ))
    }

    /// A PNG of the page as it is now.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("base64 from DevTools");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        png
    }
}
