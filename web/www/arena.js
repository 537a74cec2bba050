// Arena's browser client: WebTransport, keyboard, mouse and canvas. Every game rule and all
// netcode (handshake, codec, delta snapshots, clock, prediction, interpolation) is in the wasm
// module built from the `web` crate on the shared crate; this file moves bytes between the
// network and the module, and draws what the module says.
"use strict";

const params = new URLSearchParams(location.search);
const NAME = (params.get("name") || "player-" + Math.floor(Math.random() * 9000 + 1000)).slice(0, 32);
// Netcode frames: twice the usual tick rate (the module's clock decides which ticks are due).
const FRAME_MS = 1000 / 60;
// Reconnect backoff: full jitter, uniform(0, min(30 s, 250 ms x 2^n)); reset after a session
// of 5 s or more; never sooner than the server asked.
const BACKOFF_BASE_MS = 250, BACKOFF_CAP_MS = 30000, STABLE_SESSION_MS = 5000;

const enc = new TextEncoder(), dec = new TextDecoder();
const $ = (id) => document.getElementById(id);
let wasm = null;

/** Copies bytes into the module's input buffer; returns their length. */
function input(bytes) {
  const p = wasm.arena_input(bytes.length);
  new Uint8Array(wasm.memory.buffer, p, bytes.length).set(bytes);
  return bytes.length;
}
/** A copy of the module's output (valid until its next call). */
function output(len) {
  return new Uint8Array(wasm.memory.buffer, wasm.arena_output_ptr(), len).slice();
}
const outputJson = (len) => JSON.parse(dec.decode(output(len)));

// ---------------------------------------------------------------------------------------------
// Connection

let session = 0;          // bumped per attempt: callbacks of an older one are ignored
let conn = null;          // { wt, writer, datagrams } of the current session
let ending = true;        // no session is running (none yet, or it ended and the next is scheduled)
let attempt = 0;          // consecutive failures, for the backoff
let playingSince = 0;     // performance.now() of the last Welcome
let map = null;
// After a move (Disconnect(Moved)): where /api/connect is asked from then on ("" is this page's
// own server), and the destination the current attempt follows, if it does.
let apiBase = "";
let following = null;
let stopped = false;      // nothing more can be tried from this page (said on screen)

function b64bytes(s) {
  const bin = atob(s), out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Whether `http` (a server's HTTP base) is this page's own origin. */
function ownOrigin(http) {
  try { return new URL(http).origin === location.origin; } catch (_) { return false; }
}

/** A connect token and where to use it, from /api/connect on the current base. */
async function connectInfo() {
  let r;
  try {
    r = await fetch(`${apiBase}/api/connect?name=${encodeURIComponent(NAME)}`);
  } catch (e) {
    // A cross-origin request the other server does not allow fails like this (so does one it
    // never answers); the page cannot tell which, and retrying changes neither.
    if (apiBase) throw { stop: `${apiBase}/api/connect cannot be asked from this page (another origin, which allows no cross-origin requests, or unreachable): ${e.message || e}. Open ${apiBase}/ to play there.` };
    throw e;
  }
  if (!r.ok) throw new Error(`/api/connect: ${r.status} ${await r.text()}`);
  return r.json();
}

/** Starts a session: by a token from /api/connect, or, after a move, straight to the server
 * named (`target`: the stats' moved_to) with the resume token alone. */
async function connect(target) {
  const my = ++session;
  map = null;
  following = target || null;
  showMessage(target ? `following the server to ${target.url}…` : "connecting…");
  try {
    const info = target ? { url: target.url, cert_sha256s: target.cert_sha256s, token: "" } : await connectInfo();
    // The current certificate's hash, then the next one's shortly before a rotation (the
    // server may present either by the time the handshake arrives); none with a real one.
    const hashes = info.cert_sha256s || (info.cert_sha256 ? [info.cert_sha256] : []);
    const options = hashes.length
      ? { serverCertificateHashes: hashes.map((h) => ({ algorithm: "sha-256", value: b64bytes(h) })) }
      : {};
    const wt = new WebTransport(info.url, options);
    wt.closed.then(
      (i) => closed(my, `connection closed${i && i.reason ? ": " + i.reason : ""}`),
      (e) => closed(my, `connection lost: ${e && e.message ? e.message : e}`));
    await wt.ready;
    if (my !== session) { wt.close(); return; }
    const bidi = await wt.createBidirectionalStream();
    conn = { wt, writer: bidi.writable.getWriter(), datagrams: wt.datagrams.writable.getWriter() };
    const hello = output(wasm.arena_hello(input(enc.encode(info.token))));
    // From here the module's phase says how the session goes (netFrame watches it).
    ending = false;
    readStream(my, bidi.readable.getReader());
    readDatagrams(my, wt.datagrams.readable.getReader());
    await conn.writer.write(hello);
  } catch (e) {
    if (my !== session) return;
    if (e && e.stop) { stopped = true; showMessage(e.stop); return; }
    const why = String(e && e.message ? e.message : e);
    // Before the hello, the module knows nothing of this attempt: retry from here.
    if (ending) retry({ state: "closed", message: why, retry_after_ms: 0, permanent: false });
    else closed(my, why);
  }
}

async function readStream(my, reader) {
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || my !== session) break;
      wasm.arena_on_stream(input(value), performance.now());
    }
  } catch (e) {
    closed(my, `stream: ${e.message || e}`);
  }
}

async function readDatagrams(my, reader) {
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || my !== session) break;
      wasm.arena_on_datagram(input(value), performance.now());
    }
  } catch (_) { /* the stream's reader reports the close */ }
}

function closed(my, why) {
  if (my !== session || !wasm) return;
  wasm.arena_on_closed(input(enc.encode(why)));
}

/** The session ended (the module says why): close it and schedule the next attempt. */
function sessionEnded(stats) {
  if (ending) return;
  ending = true;
  retry(stats);
}

/** Closes what is left of the session and schedules the next attempt, saying why. */
function retry(stats) {
  if (conn) { try { conn.wt.close(); } catch (_) { /* already closed */ } conn = null; }
  if (stopped) return;
  const moved = stats.state === "disconnected" && stats.moved_to;
  if (moved) {
    // Not a failure: no backoff grows. The server's hint is the wait; from now on tokens come
    // from the new server (this page's own origin needs no base).
    playingSince = 0;
    const to = stats.moved_to;
    if (to.http && !ownOrigin(to.http)) apiBase = to.http.replace(/\/$/, "");
    const delay = stats.retry_after_ms || 0;
    showMessage(`the server moved to ${to.url}\nreconnecting in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(() => connect(to), delay);
    return;
  }
  if (following && stats.state === "rejected") {
    // The new server does not know this player: a token from its /api/connect, at once.
    following = null;
    showMessage(`the new server does not know this player (${stats.message}): joining it anew…`);
    setTimeout(connect, 0);
    return;
  }
  following = null;
  if (playingSince && performance.now() - playingSince >= STABLE_SESSION_MS) attempt = 0;
  playingSince = 0;
  const cap = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  attempt = Math.min(attempt + 1, 16);
  // A refusal that retrying cannot cure (another protocol version): try again rarely.
  const floor = stats.permanent ? BACKOFF_CAP_MS : stats.retry_after_ms || 0;
  const delay = Math.max(floor, Math.random() * cap);
  const what = { rejected: "refused", disconnected: "disconnected", closed: "connection lost" }[stats.state];
  showMessage(`${what}: ${stats.message || "no reason given"}\nreconnecting in ${(delay / 1000).toFixed(1)} s`);
  setTimeout(connect, delay);
}

function showMessage(text) {
  const m = $("message");
  m.textContent = text;
  m.style.display = text ? "block" : "none";
}

// ---------------------------------------------------------------------------------------------
// Input

const held = new Set();
let mouse = null;          // canvas pixels
let fire = false, rocket = false;
const canvas = $("view"), ctx = canvas.getContext("2d");
let view = { x: 0, y: 0, scale: 1 };   // world point at the canvas centre, pixels per unit

addEventListener("keydown", (e) => {
  held.add(e.code);
  if (e.code === "Space") { rocket = true; e.preventDefault(); }
});
addEventListener("keyup", (e) => {
  held.delete(e.code);
  if (e.code === "Space") rocket = false;
});
addEventListener("blur", () => { held.clear(); fire = rocket = false; });
canvas.addEventListener("mousemove", (e) => { mouse = [e.offsetX * devicePixelRatio, e.offsetY * devicePixelRatio]; });
canvas.addEventListener("mousedown", (e) => { if (e.button === 0) fire = true; if (e.button === 2) rocket = true; });
addEventListener("mouseup", (e) => { if (e.button === 0) fire = false; if (e.button === 2) rocket = false; });
canvas.addEventListener("contextmenu", (e) => e.preventDefault());

function axis(neg, pos) {
  return (pos.some((c) => held.has(c)) ? 1 : 0) - (neg.some((c) => held.has(c)) ? 1 : 0);
}

/** One netcode frame: the module sends what is due; bytes go out on the stream or as datagrams. */
function netFrame() {
  if (!wasm) return;
  const now = performance.now();
  const mx = axis(["KeyA", "ArrowLeft"], ["KeyD", "ArrowRight"]);
  const my = axis(["KeyW", "ArrowUp"], ["KeyS", "ArrowDown"]);
  let ax = 0, ay = 0, buttons = (fire ? 1 : 0) | (rocket ? 2 : 0);
  if (mouse) {
    ax = view.x + (mouse[0] - canvas.width / 2) / view.scale;
    ay = view.y + (mouse[1] - canvas.height / 2) / view.scale;
    buttons |= 4;
  }
  const out = output(wasm.arena_frame(now, mx, my, ax, ay, buttons));
  for (let i = 0; i + 5 <= out.length;) {
    const kind = out[i], len = out[i + 1] | (out[i + 2] << 8) | (out[i + 3] << 16) | (out[i + 4] << 24);
    const bytes = out.subarray(i + 5, i + 5 + len);
    i += 5 + len;
    if (!conn) continue;
    if (kind === 0) conn.writer.write(bytes).catch(() => {});
    else conn.datagrams.write(bytes).catch(() => {});
  }
  const stats = outputJson(wasm.arena_stats(now));
  if (stats.state === "playing") {
    if (!playingSince) { playingSince = now; showMessage(""); }
    if (!map) map = outputJson(wasm.arena_map());
  } else if (stats.state === "rejected" || stats.state === "disconnected" || stats.state === "closed") {
    sessionEnded(stats);
  }
}

// ---------------------------------------------------------------------------------------------
// Drawing

function resize() {
  canvas.width = innerWidth * devicePixelRatio;
  canvas.height = innerHeight * devicePixelRatio;
}

const COLORS = ["#e8a33d", "#8a8f98", "#f5f0a0"];   // other players, NPCs, projectiles

function draw() {
  requestAnimationFrame(draw);
  if (!wasm) return;
  const now = performance.now();
  const r = outputJson(wasm.arena_render(now));
  const stats = outputJson(wasm.arena_stats(now));
  const w = canvas.width, h = canvas.height;
  ctx.fillStyle = "#181a1f";
  ctx.fillRect(0, 0, w, h);
  hud(stats, r);
  if (!map) return;
  if (r.me) { view.x = r.me[0]; view.y = r.me[1]; }
  // About 1,400 world units across the shorter side.
  view.scale = Math.min(w, h) / 1400;
  const sx = (x) => (x - view.x) * view.scale + w / 2;
  const sy = (y) => (y - view.y) * view.scale + h / 2;
  const s = view.scale;
  ctx.fillStyle = "#20242b";
  ctx.fillRect(sx(0), sy(0), map.width * s, map.height * s);
  ctx.strokeStyle = "#262b33";
  ctx.lineWidth = 1;
  for (let g = 0; g <= Math.max(map.width, map.height); g += 256) {
    ctx.beginPath(); ctx.moveTo(sx(g), sy(0)); ctx.lineTo(sx(g), sy(map.height)); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(sx(0), sy(g)); ctx.lineTo(sx(map.width), sy(g)); ctx.stroke();
  }
  ctx.fillStyle = "#3a414d";
  for (const [x0, y0, x1, y1] of map.obstacles) ctx.fillRect(sx(x0), sy(y0), (x1 - x0) * s, (y1 - y0) * s);
  ctx.font = `${Math.max(10, 12 * devicePixelRatio)}px system-ui, sans-serif`;
  for (const [id, kind, x, y, hp, name] of r.e) {
    const radius = [map.player_radius, map.npc_radius, map.projectile_radius][kind] * s;
    ctx.fillStyle = COLORS[kind];
    ctx.beginPath(); ctx.arc(sx(x), sy(y), Math.max(radius, 2), 0, 2 * Math.PI); ctx.fill();
    if (kind !== 2) {
      ctx.fillStyle = "#aaa";
      ctx.fillText(kind === 0 ? name ?? `#${id}` : `npc ${id}`, sx(x) + radius + 3, sy(y) - radius);
      if (hp >= 0) bar(sx(x), sy(y) - radius - 7, hp / (kind === 0 ? map.player_health : map.npc_health));
    }
  }
  ctx.strokeStyle = "#fff6";
  ctx.lineWidth = 2;
  for (const [x0, y0, x1, y1] of r.t) {
    ctx.beginPath(); ctx.moveTo(sx(x0), sy(y0)); ctx.lineTo(sx(x1), sy(y1)); ctx.stroke();
  }
  if (r.me) {
    const radius = map.player_radius * s;
    ctx.fillStyle = "#4fc3f7";
    ctx.beginPath(); ctx.arc(sx(r.me[0]), sy(r.me[1]), radius, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.fillText(stats.name, sx(r.me[0]) + radius + 3, sy(r.me[1]) - radius);
    bar(sx(r.me[0]), sy(r.me[1]) - radius - 7, stats.health / map.player_health);
  }
  $("feed").innerHTML = r.f.map((line) => line.replace(/&/g, "&amp;").replace(/</g, "&lt;")).join("<br>");
}

function bar(x, y, fraction) {
  const f = Math.max(0, Math.min(1, fraction));
  ctx.fillStyle = "#222"; ctx.fillRect(x - 14, y, 28, 4);
  ctx.fillStyle = f > 0.5 ? "#6c6" : f > 0.25 ? "#dc4" : "#d55";
  ctx.fillRect(x - 14, y, 28 * f, 4);
}

function hud(stats) {
  if (stats.state !== "playing") { $("hud").textContent = `${NAME} · ${stats.state}`; return; }
  const ping = stats.ping_ms >= 0 ? stats.ping_ms.toFixed(0) : "?";
  $("hud").textContent =
    `${NAME}${stats.dead ? " (dead)" : ""}  hp ${stats.health}  K/D ${stats.kills}/${stats.deaths}\n` +
    `ping ${ping} ms · server tick ${Math.floor(stats.server_tick)}\n` +
    `${stats.snapshot_rate.toFixed(1)} snapshots/s · ${stats.kbps_down.toFixed(1)} kB/s down\n` +
    `corrections ${stats.corrections} · late inputs ${stats.late_inputs}`;
}

// ---------------------------------------------------------------------------------------------
// Start

/** The HUD's numbers, for tests and for players who want them. */
window.arena = {
  stats: () => (wasm ? outputJson(wasm.arena_stats(performance.now())) : { state: "loading" }),
  // What the next frame draws (see Client::render_json): for tests and tools.
  render: () => (wasm ? outputJson(wasm.arena_render(performance.now())) : null),
  name: NAME,
};

async function main() {
  resize();
  addEventListener("resize", resize);
  const r = await fetch("/arena_web.wasm");
  if (!r.ok) throw new Error(await r.text());
  const { instance } = await WebAssembly.instantiate(await r.arrayBuffer(), {});
  wasm = instance.exports;
  wasm.arena_new(input(enc.encode(NAME)));
  setInterval(netFrame, FRAME_MS);
  requestAnimationFrame(draw);
  connect();
}
main().catch((e) => showMessage(`cannot start: ${e.message || e}`));
