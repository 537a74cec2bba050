//! Headless Chromium driven over the Chrome DevTools Protocol (CDP), in real time.
//!
//! `--dump-dom --virtual-time-budget` runs a page's timers ahead of the real server, so pages
//! that talk WebTransport are driven live instead (shared notes: webtransport.md): one
//! WebSocket to the browser endpoint Chromium prints on stderr, one page attached over it as a
//! flattened session. A reader task routes responses to their commands by id and queues events;
//! console output, uncaught exceptions and log entries are kept for failure messages.
//!
//! Chromium runs in a process group of its own with a fresh profile directory. `close()` asks
//! it to quit over CDP, `Drop` sends SIGTERM; either way, whatever of the group is still alive
//! after a grace period gets SIGKILL, the browser process is reaped and the profile removed.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const CHROMIUM: &str = "/usr/bin/chromium";
/// From spawning Chromium to an attached page.
const STARTUP: Duration = Duration::from_secs(30);
/// One CDP command's answer.
const COMMAND: Duration = Duration::from_secs(30);
/// A navigation's `load`.
const LOAD: Duration = Duration::from_secs(30);
/// The page's viewport in CSS pixels (screenshots are this size).
pub const VIEWPORT: (u32, u32) = (1280, 800);
/// How long Chromium may take to quit by itself before its process group gets SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);
/// Kept for failure messages: the last this many console lines and stderr lines.
const KEEP_LOG: usize = 1000;
const KEEP_STDERR: usize = 200;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply = Result<Value, String>;
/// Commands waiting for their answers; `None` once the connection has closed.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>>;
type Lines = Arc<Mutex<VecDeque<String>>>;

/// A CDP event (other than console output, which goes to the console log).
#[derive(Debug)]
pub struct Event {
    pub method: String,
    pub params: Value,
}

/// A headless Chromium with one page, driven over CDP.
pub struct Browser {
    ws: SplitSink<Ws, Message>,
    /// The page's flattened session on the browser connection.
    session: String,
    next_id: u64,
    pending: Pending,
    events: mpsc::UnboundedReceiver<Event>,
    console: Lines,
    reader: JoinHandle<()>,
    /// Where the mouse is and whether its left button is down.
    mouse: (f64, f64, bool),
    /// Declared last: dropped (the process ended) after the connection.
    process: Process,
}

impl Browser {
    /// Starts Chromium on a fresh profile and attaches to its page (`about:blank`).
    pub async fn launch() -> Browser {
        Self::launch_with(&[]).await
    }

    /// [`launch`](Browser::launch) with extra command-line switches.
    pub async fn launch_with(extra_args: &[String]) -> Browser {
        let mut process = Process::spawn(extra_args);
        let url = process.devtools_url().await;
        let (socket, _) = tokio::time::timeout(COMMAND, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|_| panic!("no WebSocket to {url} in time{}", process.stderr_tail()))
            .unwrap_or_else(|e| panic!("WebSocket to {url}: {e}{}", process.stderr_tail()));
        let (ws, stream) = socket.split();
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let console: Lines = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read(stream, pending.clone(), events_tx, console.clone()));
        let mut browser = Browser {
            ws,
            session: String::new(),
            next_id: 0,
            pending,
            events,
            console,
            reader,
            mouse: (0.0, 0.0, false),
            process,
        };
        browser.attach().await;
        browser
    }

    /// Finds the page Chromium opened (an event, not a poll: discovery reports every existing
    /// target) and attaches to it; enables what the other methods rely on.
    async fn attach(&mut self) {
        self.command(
            None,
            "Target.setDiscoverTargets",
            json!({ "discover": true }),
        )
        .await
        .unwrap_or_else(|e| panic!("Target.setDiscoverTargets: {e}"));
        let created = self
            .next_event(STARTUP, "a page target", |e| {
                e.method == "Target.targetCreated" && e.params["targetInfo"]["type"] == "page"
            })
            .await;
        let target = created.params["targetInfo"]["targetId"].clone();
        self.command(
            None,
            "Target.setDiscoverTargets",
            json!({ "discover": false }),
        )
        .await
        .unwrap_or_else(|e| panic!("Target.setDiscoverTargets: {e}"));
        let attached = self
            .command(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await
            .unwrap_or_else(|e| panic!("Target.attachToTarget: {e}"));
        self.session = attached["sessionId"]
            .as_str()
            .expect("attachToTarget answers a sessionId")
            .to_string();
        for (method, params) in [
            ("Page.enable", json!({})),
            ("Page.setLifecycleEventsEnabled", json!({ "enabled": true })),
            ("Runtime.enable", json!({})),
            ("Log.enable", json!({})),
            // A headless page is not focused otherwise: `document.hasFocus()` is false and
            // focus/blur handlers do not run. Key events arrive either way.
            (
                "Emulation.setFocusEmulationEnabled",
                json!({ "enabled": true }),
            ),
            // `--window-size` sizes the window: headless leaves room for browser UI that is not
            // drawn, and the page got 1280x657. Pin the viewport itself.
            (
                "Emulation.setDeviceMetricsOverride",
                json!({
                    "width": VIEWPORT.0,
                    "height": VIEWPORT.1,
                    "deviceScaleFactor": 1,
                    "mobile": false,
                }),
            ),
        ] {
            self.cdp(method, params).await;
        }
    }

    /// Sends a command to the page and returns its result; panics on a protocol error.
    pub async fn cdp(&mut self, method: &str, params: Value) -> Value {
        let session = Some(self.session.clone());
        match self.command(session.as_deref(), method, params).await {
            Ok(result) => result,
            Err(e) => panic!("{method}: {e}{}", self.diagnostics()),
        }
    }

    /// Sends a command (to the page session, or to the browser with `None`) and awaits its
    /// answer.
    async fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Reply {
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = oneshot::channel();
        match self.pending.lock().unwrap().as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => return Err("the DevTools connection has closed".into()),
        };
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        if let Err(e) = self.ws.send(Message::text(message.to_string())).await {
            return Err(format!("sending over the DevTools connection: {e}"));
        }
        match tokio::time::timeout(COMMAND, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err("the DevTools connection closed before the answer".into()),
            Err(_) => {
                if let Some(pending) = self.pending.lock().unwrap().as_mut() {
                    pending.remove(&id);
                }
                Err(format!("no answer within {COMMAND:?}"))
            }
        }
    }

    /// The next queued event that matches, waiting up to `timeout`; earlier ones are dropped.
    async fn next_event(
        &mut self,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&Event) -> bool,
    ) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if matches(&event) => return event,
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "the DevTools connection closed while waiting for {what}{}",
                    self.diagnostics()
                ),
                Err(_) => panic!("no {what} within {timeout:?}{}", self.diagnostics()),
            }
        }
    }

    /// Navigates the page and waits for the new document's `load` event.
    pub async fn goto(&mut self, url: &str) {
        // Events of earlier documents are of no use from here on.
        while self.events.try_recv().is_ok() {}
        let navigated = self.cdp("Page.navigate", json!({ "url": url })).await;
        if let Some(error) = navigated["errorText"].as_str() {
            panic!("navigating to {url}: {error}{}", self.diagnostics());
        }
        // A same-document navigation (only the fragment changed) has no loader and no load.
        let Some(loader) = navigated["loaderId"].as_str().map(String::from) else {
            return;
        };
        self.next_event(LOAD, &format!("load of {url}"), |e| {
            e.method == "Page.lifecycleEvent"
                && e.params["name"] == "load"
                && e.params["loaderId"] == loader.as_str()
        })
        .await;
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value as JSON
    /// (`null` for `undefined`); panics with the exception if the script threw.
    pub async fn eval(&mut self, js: &str) -> Value {
        match self.try_eval(js).await {
            Ok(value) => value,
            Err(e) => panic!("evaluating `{js}` threw: {e}{}", self.diagnostics()),
        }
    }

    /// `eval`, with what the script threw (or why it could not run) as an error.
    pub async fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        let session = Some(self.session.clone());
        let params = json!({
            "expression": js,
            "returnByValue": true,
            "awaitPromise": true,
        });
        let result = self
            .command(session.as_deref(), "Runtime.evaluate", params)
            .await?;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("an exception");
            return Err(text.to_string());
        }
        let value = &result["result"];
        Ok(match value.get("unserializableValue") {
            // NaN, Infinity, -0 and BigInts have no JSON form.
            Some(v) => v.clone(),
            None => value.get("value").cloned().unwrap_or(Value::Null),
        })
    }

    /// Evaluates the expression `js_condition` (awaiting a promise) until its value is truthy,
    /// and returns that value. A condition that throws (say, on an object the page has not
    /// made yet) counts as not yet true. Panics with the last value or error at the deadline.
    pub async fn wait_for(&mut self, js_condition: &str, timeout: Duration) -> Value {
        let js = format!(
            "(async () => {{ const v = await ({js_condition}\n); \
             return v ? {{ ok: true, v }} : {{ ok: false, v: String(v) }}; }})()"
        );
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_eval(&js).await {
                Ok(r) if r["ok"] == true => return r["v"].clone(),
                Ok(r) => format!("it was {}", r["v"]),
                Err(e) => format!("it threw {e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "`{js_condition}` was not true within {timeout:?}: {last}{}",
                    self.diagnostics()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Presses a key and holds it: a letter or digit (`"w"`, `"7"`), `"Space"`, `"Enter"`,
    /// `"Escape"`, `"Tab"`, `"Backspace"`, `"Shift"`, `"Control"`, `"Alt"` or an arrow
    /// (`"ArrowUp"`). Page listeners see the same `key` and `code` as from a keyboard (no
    /// auto-repeat while held).
    pub async fn key_down(&mut self, key: &str) {
        let k = Key::named(key);
        let mut params = json!({
            "type": if k.text.is_some() { "keyDown" } else { "rawKeyDown" },
            "key": k.key,
            "code": k.code,
            "windowsVirtualKeyCode": k.vk,
            "nativeVirtualKeyCode": k.vk,
        });
        if let Some(text) = k.text {
            params["text"] = text.into();
            params["unmodifiedText"] = text.into();
        }
        self.cdp("Input.dispatchKeyEvent", params).await;
    }

    /// Releases a key pressed with `key_down`.
    pub async fn key_up(&mut self, key: &str) {
        let k = Key::named(key);
        let params = json!({
            "type": "keyUp",
            "key": k.key,
            "code": k.code,
            "windowsVirtualKeyCode": k.vk,
            "nativeVirtualKeyCode": k.vk,
        });
        self.cdp("Input.dispatchKeyEvent", params).await;
    }

    /// `key_down` then `key_up`.
    pub async fn press(&mut self, key: &str) {
        self.key_down(key).await;
        self.key_up(key).await;
    }

    /// Moves the mouse to page coordinates (CSS pixels), dragging if the button is down.
    pub async fn mouse_move(&mut self, x: f64, y: f64) {
        self.mouse.0 = x;
        self.mouse.1 = y;
        self.mouse_event("mouseMoved", 0).await;
    }

    /// Presses the left button where the mouse is.
    pub async fn mouse_down(&mut self) {
        self.mouse.2 = true;
        self.mouse_event("mousePressed", 1).await;
    }

    /// Releases the left button where the mouse is.
    pub async fn mouse_up(&mut self) {
        self.mouse.2 = false;
        self.mouse_event("mouseReleased", 1).await;
    }

    /// Moves to `(x, y)` and clicks the left button there.
    pub async fn mouse_click(&mut self, x: f64, y: f64) {
        self.mouse_move(x, y).await;
        self.mouse_down().await;
        self.mouse_up().await;
    }

    async fn mouse_event(&mut self, kind: &str, click_count: u32) {
        let (x, y, down) = self.mouse;
        // `button` is the one that changed (or "none" for a move); `buttons` those held after.
        let button = if kind == "mouseMoved" && !down {
            "none"
        } else {
            "left"
        };
        let params = json!({
            "type": kind,
            "x": x,
            "y": y,
            "button": button,
            "buttons": if down { 1 } else { 0 },
            "clickCount": click_count,
        });
        self.cdp("Input.dispatchMouseEvent", params).await;
    }

    /// Writes a PNG of the page's viewport to `path` (its directory is created).
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .cdp("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = shot["data"]
            .as_str()
            .expect("captureScreenshot answers base64 data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("captureScreenshot's data is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// What the page wrote to its console, threw uncaught, or logged (network errors among
    /// them), oldest first: the last 1000 lines.
    pub fn console_messages(&self) -> Vec<String> {
        self.console.lock().unwrap().iter().cloned().collect()
    }

    /// Console and Chromium's stderr, to append to a failure message.
    pub fn diagnostics(&self) -> String {
        let console = self.console.lock().unwrap();
        let skip = console.len().saturating_sub(50);
        let mut out = String::from("\n--- page console (last 50) ---\n");
        for line in console.iter().skip(skip) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&self.process.stderr_tail());
        out
    }

    /// The browser process's id, which is also its process group's id.
    pub fn process_group(&self) -> libc::pid_t {
        self.process.pid()
    }

    /// Its profile directory, removed once it has ended.
    pub fn profile(&self) -> &Path {
        &self.process.profile
    }

    /// Asks Chromium to quit, then ends whatever of it is left and removes the profile.
    pub async fn close(mut self) {
        // The answer may not come: the connection can drop first.
        let close = self.command(None, "Browser.close", json!({}));
        let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
        self.process.finish(true).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
        // `process` ends Chromium in its own Drop (SIGTERM first, then the group's SIGKILL).
    }
}

/// Reads the browser connection: answers to their commands, console output to the log, other
/// events to the queue.
async fn read(
    mut stream: SplitStream<Ws>,
    pending: Pending,
    events: mpsc::UnboundedSender<Event>,
    console: Lines,
) {
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(mut message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(id) = message["id"].as_u64() {
            let waiting = pending.lock().unwrap().as_mut().and_then(|p| p.remove(&id));
            if let Some(waiting) = waiting {
                let reply = match message.get("error") {
                    Some(error) => Err(format!("CDP error {error}")),
                    None => Ok(message["result"].take()),
                };
                let _ = waiting.send(reply);
            }
            continue;
        }
        let Some(method) = message["method"].as_str().map(String::from) else {
            continue;
        };
        let params = message["params"].take();
        let line = match method.as_str() {
            "Runtime.consoleAPICalled" => Some(console_line(&params)),
            "Runtime.exceptionThrown" => Some(exception_line(&params)),
            "Log.entryAdded" => Some(log_line(&params)),
            _ => None,
        };
        match line {
            Some(line) => {
                let mut console = console.lock().unwrap();
                if console.len() == KEEP_LOG {
                    console.pop_front();
                }
                console.push_back(line);
            }
            None => {
                let _ = events.send(Event { method, params });
            }
        }
    }
    // Commands waiting now get their error; later ones are refused.
    pending.lock().unwrap().take();
}

fn console_line(params: &Value) -> String {
    let args: Vec<String> = params["args"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(
            |arg| match (arg.get("value"), arg["description"].as_str()) {
                (Some(Value::String(s)), _) => s.clone(),
                (Some(v), _) => v.to_string(),
                (None, Some(d)) => d.to_string(),
                (None, None) => arg["type"].as_str().unwrap_or("?").to_string(),
            },
        )
        .collect();
    format!(
        "console.{}: {}",
        params["type"].as_str().unwrap_or("log"),
        args.join(" ")
    )
}

fn exception_line(params: &Value) -> String {
    let details = &params["exceptionDetails"];
    let text = details["exception"]["description"]
        .as_str()
        .or(details["text"].as_str())
        .unwrap_or("?");
    format!("uncaught: {text}")
}

fn log_line(params: &Value) -> String {
    let entry = &params["entry"];
    let mut line = format!(
        "log.{} ({}): {}",
        entry["level"].as_str().unwrap_or("?"),
        entry["source"].as_str().unwrap_or("?"),
        entry["text"].as_str().unwrap_or("")
    );
    if let Some(url) = entry["url"].as_str() {
        line.push_str(&format!(" [{url}]"));
    }
    line
}

/// A key as `Input.dispatchKeyEvent` wants it.
struct Key {
    key: String,
    code: String,
    vk: u32,
    text: Option<&'static str>,
}

impl Key {
    fn named(name: &str) -> Key {
        const LETTERS: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
        let mut chars = name.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            let lower = c.to_ascii_lowercase();
            if let Some(i) = LETTERS.find(lower) {
                let upper = lower.to_ascii_uppercase();
                return Key {
                    key: lower.to_string(),
                    code: if lower.is_ascii_digit() {
                        format!("Digit{lower}")
                    } else {
                        format!("Key{upper}")
                    },
                    vk: upper as u32,
                    text: Some(&LETTERS[i..i + 1]),
                };
            }
        }
        let (key, code, vk, text) = match name {
            "Space" | " " => (" ", "Space", 32, Some(" ")),
            "Enter" => ("Enter", "Enter", 13, Some("\r")),
            "Escape" => ("Escape", "Escape", 27, None),
            "Tab" => ("Tab", "Tab", 9, None),
            "Backspace" => ("Backspace", "Backspace", 8, None),
            "Shift" => ("Shift", "ShiftLeft", 16, None),
            "Control" => ("Control", "ControlLeft", 17, None),
            "Alt" => ("Alt", "AltLeft", 18, None),
            "ArrowLeft" => ("ArrowLeft", "ArrowLeft", 37, None),
            "ArrowUp" => ("ArrowUp", "ArrowUp", 38, None),
            "ArrowRight" => ("ArrowRight", "ArrowRight", 39, None),
            "ArrowDown" => ("ArrowDown", "ArrowDown", 40, None),
            _ => panic!("no key named {name:?} in the browser harness"),
        };
        Key {
            key: key.into(),
            code: code.into(),
            vk,
            text,
        }
    }
}

/// The Chromium process (leader of its own process group) and its profile directory.
struct Process {
    child: Child,
    profile: PathBuf,
    stderr: Lines,
    /// The `ws://` URL from stderr, once.
    devtools: Option<oneshot::Receiver<String>>,
    finished: bool,
}

impl Process {
    fn spawn(extra_args: &[String]) -> Process {
        static LAUNCHES: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let profile = std::env::temp_dir().join(format!(
            "arena-chromium-{}-{}-{nanos}",
            std::process::id(),
            LAUNCHES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile)
            .unwrap_or_else(|e| panic!("creating {}: {e}", profile.display()));
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra_args)
            .arg("about:blank")
            // Crashpad keeps its database under the XDG config directory, not the profile:
            // keep that inside the profile too, so nothing is written outside it.
            .env("XDG_CONFIG_HOME", profile.join("xdg-config"))
            .env("XDG_CACHE_HOME", profile.join("xdg-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group, so that its helpers (zygote, renderers, GPU, network) end with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&profile);
                panic!("starting {CHROMIUM}: {e}")
            });
        let stderr: Lines = Arc::default();
        let (url_tx, url_rx) = oneshot::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let lines = stderr.clone();
        // A thread drains stderr for the browser's whole life (a full pipe would stall it).
        std::thread::spawn(move || {
            let mut url_tx = Some(url_tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ")
                    && let Some(tx) = url_tx.take()
                {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut lines = lines.lock().unwrap();
                if lines.len() == KEEP_STDERR {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        Process {
            child,
            profile,
            stderr,
            devtools: Some(url_rx),
            finished: false,
        }
    }

    /// The browser endpoint, `ws://127.0.0.1:PORT/devtools/browser/ID`, from stderr.
    async fn devtools_url(&mut self) -> String {
        let rx = self
            .devtools
            .take()
            .expect("the DevTools address is read once");
        match tokio::time::timeout(STARTUP, rx).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => panic!(
                "{CHROMIUM} ended without printing its DevTools address{}",
                self.stderr_tail()
            ),
            Err(_) => panic!(
                "{CHROMIUM} printed no DevTools address within {STARTUP:?}{}",
                self.stderr_tail()
            ),
        }
    }

    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        let skip = lines.len().saturating_sub(40);
        let mut out = String::from("\n--- chromium stderr (last 40 lines) ---\n");
        for line in lines.iter().skip(skip) {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Whether the browser process has exited, without reaping it: while it is an unreaped
    /// zombie its pid (the group's id) cannot be reused, so signalling the group stays safe.
    fn has_exited(&self) -> bool {
        // SAFETY: waitid writes only into `info`, which lives on this stack frame.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let found = libc::waitid(
                libc::P_PID,
                self.pid() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            // An error (ECHILD) means there is nothing left to wait for.
            found != 0 || info.si_pid() != 0
        }
    }

    /// Ends the group: waits up to `GRACE` for the browser to quit (async or blocking), then
    /// SIGKILLs what is left of the group, reaps the browser and removes the profile.
    async fn finish(&mut self, asked_to_quit: bool) {
        if self.finished {
            return;
        }
        if !asked_to_quit {
            // SAFETY: a plain kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        }
        let deadline = Instant::now() + GRACE;
        while !self.has_exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill_and_reap();
    }

    /// The blocking `finish`, for `Drop`.
    fn finish_blocking(&mut self) {
        if self.finished {
            return;
        }
        // SAFETY: a plain kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + GRACE;
        while !self.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_and_reap();
    }

    fn kill_and_reap(&mut self) {
        self.finished = true;
        // SAFETY: kill(2) on the group whose leader is our child, not reaped yet (its pid is
        // still the group's). ESRCH (nothing left) is fine.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
        // A helper SIGKILLed a moment ago may still be writing into the profile.
        for _ in 0..50 {
            match std::fs::remove_dir_all(&self.profile) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.finish_blocking();
    }
}
