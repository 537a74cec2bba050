//! Every setting of the server, with its flag and its default. Every bound the server keeps
//! (queues, frames, rates, connections) is named here. A leaf: it imports nothing from the rest
//! of the server (the other modules read their settings and defaults from it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Arena's authoritative game server: WebTransport (HTTP/3) for play, HTTP for the page,
/// connect tokens and health.
#[derive(Debug, Clone, Parser)]
#[command(name = "arena-server", version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// UDP address of the WebTransport endpoint (port 0 picks a free port; the bound address
    /// is logged).
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub wt_bind: SocketAddr,
    /// Bytes of receive buffer asked of the kernel for the WebTransport UDP socket. Every
    /// client sends an input and an acknowledgement each tick, and they wait there while the
    /// endpoint's driver is not scheduled (a long tick's replication holds both cores): the
    /// kernel's default (~208 KiB, a few hundred small datagrams at its accounting) overflowed
    /// at 400 clients on two cores. The kernel caps the request at `net.core.rmem_max`; the
    /// size granted is logged and exported (`arena_udp_receive_buffer_bytes`).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub udp_recv_buffer: usize,

    /// TCP address of the HTTP side (/healthz, /api/connect).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_bind: SocketAddr,
    /// Time an HTTP client has to send a whole request head (request line and headers), from
    /// opening the connection or from the end of the previous response; then the connection
    /// closes (408 if a head was begun). It is also the keep-alive idle timeout: a connection
    /// quiet that long is closed. A head is a few hundred bytes that any client sends in one
    /// go, so 5 s spares slow mobile links while a slowloris client that trickles header
    /// lines to hold connections open gets nothing for long. 0s: no deadline.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub http_header_timeout: Duration,
    /// HTTP connections open at once, all clients together. When full, a new connection takes
    /// the place of the one that has waited longest for a request head (slowloris, or kept
    /// alive and idle), which is closed and counted; only when every connection is in the
    /// middle of a request is the new one closed as it is accepted. Keep it well below the process's open-file limit (`ulimit -n`,
    /// often 1024), so replay files, logs and the certificate reload still get descriptors
    /// (the WebTransport side needs one socket whatever the player count). 0: no cap.
    #[arg(long, default_value_t = 512)]
    pub http_max_connections: usize,
    /// HTTP connections open at once from one address (IPv4 address, IPv6 /64); one more is
    /// closed as it is accepted (and counted). A browser opens about 6; 32 leaves room for a
    /// household or an office behind one NAT. Loopback is spared under --exempt-loopback.
    /// 0: no cap.
    #[arg(long, default_value_t = 32)]
    pub http_max_connections_per_address: usize,
    /// Largest HTTP request head (request line and headers) read, in bytes; a larger one gets
    /// 431 and the connection closes. At least 8192 (hyper's floor).
    #[arg(long, default_value_t = 16 * 1024,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(8192..))]
    pub http_max_header_bytes: usize,
    /// Largest HTTP request body accepted, in bytes; a request declaring more gets 413 unread
    /// (no route of the game's side takes a body).
    #[arg(long, default_value_t = 16 * 1024)]
    pub http_max_body_bytes: usize,
    /// Connect tokens /api/connect issues per second to one address (IPv4 address, IPv6 /64),
    /// with --connect-burst-per-address saved up; beyond it 429 with Retry-After (counted).
    /// A player asks once per join. The address is the connection's: X-Forwarded-For is not
    /// trusted, so behind a reverse proxy every player shares the proxy's address; there,
    /// limit per client at the proxy and turn this off (0) or keep --exempt-loopback for a
    /// proxy on the same host. 0: no limit.
    #[arg(long, default_value_t = 5.0)]
    pub connect_per_sec_per_address: f64,
    /// Connect tokens one address may take at once before --connect-per-sec-per-address
    /// applies: a household or a LAN party joining together.
    #[arg(long, default_value_t = 20.0)]
    pub connect_burst_per_address: f64,

    /// The WebTransport URL that /api/connect hands out, e.g. https://play.example.com:4433/.
    /// Set it whenever clients reach the server by another address than --wt-bind (NAT,
    /// containers, load balancers). When absent: https://<bound WT address>/, or with an
    /// unspecified bind address, the HTTP request's host with the WT port.
    #[arg(long)]
    pub public_url: Option<String>,

    /// PEM certificate chain for WebTransport. Without --cert/--key a self-signed ECDSA P-256
    /// certificate valid for --cert-validity is made at start, pinned by browsers through its
    /// hash, and replaced before it expires (--cert-rotate-before). A real certificate is
    /// never rotated: restart with the renewed files.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key matching --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,

    /// Validity of each self-signed certificate (not_after minus not_before, which Chromium
    /// requires to be at most 14 days; at least 4s, short ones are for tests). not_before is
    /// back-dated by a quarter of it, at most an hour, for clients' clock skew.
    #[arg(long, default_value = "13days", value_parser = parse_cert_validity)]
    pub cert_validity: Duration,

    /// How long before the self-signed certificate expires it is replaced by a new one on the
    /// live endpoint: new handshakes get the new one, connected players keep theirs. Must be
    /// shorter than a certificate's life after it is made (--cert-validity less its
    /// back-dating); checked at start. /api/connect lists the next certificate's hash next to
    /// the current one from --token-ttl before the replacement (at most a quarter of the time
    /// between replacements).
    #[arg(long, default_value = "2days", value_parser = humantime::parse_duration)]
    pub cert_rotate_before: Duration,

    /// Simulation ticks per second (snapshots are sent every tick).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=240))]
    pub tick_rate: u16,

    /// Wandering NPC entities spawned at start.
    #[arg(long, default_value_t = 1000)]
    pub npcs: u32,

    /// Side of the square world, in world units.
    #[arg(long, default_value_t = 4096.0)]
    pub world_size: f32,

    /// Rectangular obstacles the map generator places.
    #[arg(long, default_value_t = 48)]
    pub obstacles: u32,

    /// Seed of the map and of NPC behaviour.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Most players at once, counting those whose connection was lost and whose entity waits
    /// out --resume-grace (their seat is held); the next Hello gets Reject(ServerFull).
    #[arg(long, default_value_t = 5000)]
    pub max_clients: usize,

    /// tracing filter, e.g. "info" or "arena_server=debug,wtransport=warn".
    #[arg(long, default_value = "info")]
    pub log: String,

    /// How long a connect token from /api/connect stays valid.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// Time a new connection has to finish the QUIC/HTTP3 handshake and send its Hello.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// QUIC idle timeout: a client silent this long is dropped (keep-alives run at a third of it).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Capacity of the channel from all sessions to the simulation (inputs, joins, leaves).
    /// Inputs that find it full are dropped and counted.
    #[arg(long, default_value_t = 65_536)]
    pub inbox_capacity: usize,

    /// How many ticks ahead of the simulation a player's input may be (the input buffer holds
    /// at most this many per player; inputs further ahead are refused and counted).
    #[arg(long, default_value_t = 32)]
    pub input_window: u32,

    /// Game events (hits, kills, respawns, score) waiting per session for its reliable
    /// stream; beyond this they are dropped and counted (the client is not reading).
    #[arg(long, default_value_t = DEFAULT_EVENT_CAPACITY)]
    pub event_queue: usize,

    /// Whether NPCs notice, chase and shoot players (`false`: they only wander, which is what
    /// netcode measurements and tests that must not be confounded by deaths want).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub npc_combat: bool,

    /// How long a dead player or NPC waits before it respawns (at a spawn point away from
    /// enemies).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub respawn_delay: Duration,

    /// Spawn protection: after joining and after each respawn a player takes no damage and no
    /// NPC picks it as a target for this long, or until it fires (`0s`: none). Long enough that
    /// a newcomer who has not touched the keys yet is still alive after 10 s.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub spawn_protection: Duration,

    /// At most this many NPCs chase and shoot one player at a time; the others keep wandering
    /// until one of them gives up (a crowd of NPCs noticing a player at once is not a fight).
    #[arg(long, default_value_t = 2)]
    pub npc_max_engaged: u32,

    /// How long an NPC that has just noticed a player waits before its first shot.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub npc_reaction: Duration,

    /// Lag compensation: how much of the past the server keeps of every hittable entity's
    /// position (memory: this many ticks of positions).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub lag_comp_history: Duration,

    /// Lag compensation: how far back a hitscan shot may be tested (the shooter's view time,
    /// clamped), so a laggy shooter cannot reach far into the past. At most --lag-comp-history.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub max_rewind: Duration,

    /// Snapshots waiting per session to be sent; the oldest is dropped beyond this (the client
    /// is slow, and a newer snapshot supersedes it). Once a session plays, its snapshots go to
    /// QUIC as they are built (which bounds its own queue the same way); this queue then holds
    /// only what the session must see to (the connection lost or refusing datagrams).
    #[arg(long, default_value_t = 4)]
    pub outbox_snapshots: usize,

    /// How snapshots are built: `delta` (acknowledged baselines, interest, budget) or `full`
    /// (every entity to every client every tick; for comparison).
    #[arg(long, value_enum, default_value = "delta")]
    pub replication: ReplicationMode,

    /// Radius of a client's area of interest around its own entity, world units. Entities
    /// further away are never sent to it.
    #[arg(long, default_value_t = 600.0)]
    pub aoi_radius: f32,

    /// An entity in a client's interest leaves it only beyond aoi-radius + this, so entities
    /// on the border do not flicker in and out.
    #[arg(long, default_value_t = 60.0)]
    pub aoi_hysteresis: f32,

    /// Per-client downstream budget for snapshots, kilobits per second (divided per tick; also
    /// capped by the connection's maximum datagram size).
    #[arg(long, default_value_t = 64)]
    pub client_kbps: u32,

    /// Most entities in one client's interest set (the nearest are kept): bounds the memory of
    /// its baseline ring (32 views of at most this many entities).
    #[arg(long, default_value_t = 1024)]
    pub max_view: usize,
    /// A client whose last snapshot left entities waiting (its budget full) re-ranks its
    /// interest set once in this many ticks; in between it sends the next of the last
    /// ranking (replication/replicator.rs, "Re-ranking"). 1 re-ranks every tick.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub rerank_ticks: u32,
    /// Threads that build clients' snapshots in parallel each tick, the simulation thread
    /// included (0: one per CPU and one more, since the runtime's workers share those cores;
    /// at most 256): the simulation thread builds a share and starts a helper thread for each
    /// other one. Clients are independent, so the result does not depend on the count; 1
    /// builds them on the simulation thread alone.
    #[arg(long, default_value_t = 0,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_REPLICATION_THREADS as u64))]
    pub replication_threads: usize,

    /// Period of the heap trim: glibc's `malloc_trim`, giving the pages that handshakes and
    /// departed players freed inside malloc's arenas back to the kernel (~5 KiB of RSS a client
    /// at 400 players; ~1 ms of a blocking thread a trim). A trim that took longer puts the next
    /// off to keep trimming under a thousandth of a thread (`memory::TRIM_SHARE`). 0 turns it
    /// off; builds without glibc (musl, as in the container image) have no such call.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub memory_trim_interval: Duration,
    /// Most of glibc malloc's arenas (`M_ARENA_MAX`), set at start: 0 is one per CPU. glibc's
    /// own default, eight per CPU, spreads connections' blocks over every thread's arena, where
    /// a trim gives back less (~10% of RSS a client at 1,000 players on two CPUs); a single
    /// arena's lock stalls a saturated server. Builds without glibc ignore it.
    #[arg(long, default_value_t = 0)]
    pub malloc_arenas: usize,

    /// Period of the stats line in the log (0 turns it off).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,

    /// Secret that signs connect tokens: its bytes as given (at least 16; nothing is decoded,
    /// so a hex string counts its characters). Without it a random secret is made per run, so
    /// tokens from a previous run are refused.
    #[arg(long, env = "ARENA_TOKEN_SECRET", hide_env_values = true, value_parser = parse_token_secret)]
    pub token_secret: Option<String>,
    /// File holding the token secret (its bytes, a trailing newline trimmed); wins over
    /// --token-secret, and keeps the secret out of the process list and the environment.
    #[arg(long, env = "ARENA_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// /api/connect hands out no tokens (404): players get theirs from the studio's own login
    /// service, which signs them with the same secret (PROTOCOL.md, "Connect token format").
    #[arg(long)]
    pub no_guest_tokens: bool,
    /// Most tokens remembered as used at once (each until its expiry), so a token admits one
    /// session only. When full, new sessions by token are refused (Reject(ServerFull), retry
    /// when the first expires) rather than an unexpired entry forgotten, which would let its
    /// token admit again. At least --handshakes-per-sec x the longest token life keeps it from
    /// filling.
    #[arg(long, default_value_t = 100_000)]
    pub max_used_tokens: usize,
    /// Per-address limits (handshakes, sessions, HTTP connections and requests, the viewer)
    /// spare loopback addresses: the host's own tools (the bot swarm, health checks) are not
    /// strangers. `false` applies them to loopback too (tests acting as many hosts from
    /// 127.0.0.2 and up; a server whose public traffic arrives through a local proxy, where
    /// the proxy must then do the per-client limiting).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub exempt_loopback: bool,
    /// Most seats (live and lingering sessions) held at once from one address (an IPv4
    /// address, or an IPv6 /64); the next gets Reject(TooManyFromAddress). Loopback is spared
    /// under --exempt-loopback. Raise it, or 0 (no limit), for players behind carrier-grade
    /// or campus NAT (README, "Players behind NAT").
    #[arg(long, default_value_t = 16)]
    pub max_per_ip: usize,
    /// Handshakes admitted per second, all clients together (a token bucket with a second's
    /// burst); beyond it Reject(RateLimited) with a retry hint. Spent only by a decodable
    /// Hello that passed its address's bucket; a known resume token spends nothing. 0: no
    /// limit.
    #[arg(long, default_value_t = 500.0)]
    pub handshakes_per_sec: f64,
    /// Handshakes (decodable Hellos) admitted per second from one address (an IPv4 address,
    /// or an IPv6 /64), checked before the global --handshakes-per-sec; beyond it
    /// Reject(RateLimited) with a retry hint. Loopback is spared under --exempt-loopback.
    /// 0: no limit.
    #[arg(long, default_value_t = 2.0)]
    pub handshakes_per_sec_per_address: f64,
    /// Handshakes one address may make at once before --handshakes-per-sec-per-address
    /// applies: a household behind one NAT all joining together.
    #[arg(long, default_value_t = 10.0)]
    pub handshake_burst_per_address: f64,
    /// Addresses whose handshake buckets are remembered at once (a bucket that has refilled is
    /// forgotten first); when all are owed tokens a new address waits, so a flood from more
    /// addresses than this is limited as a whole by --handshakes-per-sec.
    #[arg(long, default_value_t = 65_536)]
    pub max_handshake_addresses: usize,
    /// Connections accepted by the WebTransport endpoint and not yet admitted or refused
    /// (QUIC, TLS, the CONNECT request, Hello), all addresses together; beyond it new
    /// connections are refused at once (QUIC CONNECTION_REFUSED), before any TLS work.
    #[arg(long, default_value_t = 1024)]
    pub max_handshakes_in_flight: usize,
    /// With more handshakes than this in flight, a new connection whose address QUIC has not
    /// validated is answered with a Retry: the client must prove it receives at its address
    /// (one round trip more) before the server does any TLS work or keeps any state.
    /// 0: always; --max-handshakes-in-flight or more: never.
    #[arg(long, default_value_t = 256)]
    pub retry_above: usize,
    /// Handshakes in flight from one address (an IPv4 address, or an IPv6 /64); beyond it a
    /// new connection from there is refused (an unvalidated one gets a Retry first). Loopback
    /// is spared under --exempt-loopback. 0: no limit.
    #[arg(long, default_value_t = 16)]
    pub max_handshakes_in_flight_per_address: usize,
    /// A web origin whose pages may open game sessions (repeatable), e.g.
    /// https://play.example.com. Pages served by the game server's own host are always
    /// allowed; a WebTransport request from any other origin is refused with 403. Requests
    /// without an Origin header (native clients, bots) are not affected.
    #[arg(long = "allowed-origin")]
    pub allowed_origins: Vec<String>,
    /// Inputs a session may send per second (a second's burst); the excess is dropped and
    /// counted, and a session that sends more than twice this in a second is disconnected
    /// (InputFlood). 0: no limit.
    #[arg(long, default_value_t = 120.0)]
    pub max_inputs_per_sec: f64,
    /// `WhoIs` requests (player names, at most 64 each) a session may send per second (a
    /// second's burst); the excess is dropped unanswered and counted. 0: no limit.
    #[arg(long, default_value_t = 4.0)]
    pub max_whois_per_sec: f64,
    /// Bytes the server lets wait for a client's reliable stream (beyond what QUIC's
    /// flow-control window holds); a client that lets more pile up, by not reading its stream,
    /// is disconnected (SlowConsumer). Pongs may use at most half of it: beyond that they are
    /// dropped and counted, never a reason to disconnect.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_send_backlog: usize,
    /// When a live handoff moves every player to the new server, each is told to reconnect
    /// after a delay spread uniformly over this window (`Disconnect(Moved)`'s
    /// `reconnect_after_ms`), as the drain spreads its hints. At most 60s.
    #[arg(long, default_value = "2s", value_parser = parse_handoff_spread)]
    pub handoff_spread: Duration,
    /// On SIGTERM every player is told to reconnect after a delay spread uniformly over this
    /// many seconds (`Disconnect.reconnect_after_ms`), so a restart is not met by everyone at
    /// once; the server exits within this time (connections still open then are closed).
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u32,
    /// How long a player whose connection was lost without a goodbye (idle timeout, network
    /// error) keeps its entity and seat: a `Hello` with the session's resume token (or a
    /// connect token for its client id) within this time takes them back. 0: no resume.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub resume_grace: Duration,
    /// Largest live-handoff state (`handoff::Bundle`, encoded) a server sends or accepts; a
    /// longer one is refused before it is decoded. 5,000 NPCs and 500 players in combat take
    /// about 0.4 MB (BENCHMARKS.md, "Live handoff"): the default is ten times that.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub handoff_max_bytes: usize,
    /// How long a server that handed its state out stays frozen waiting for the new server's
    /// confirmation; then it unfreezes and carries on (the handoff counted as failed). Its
    /// replay writer gets at most half of it, before the state goes out, to catch up so the
    /// new server can continue the run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub handoff_timeout: Duration,
    /// Start by taking over a running server's world: once bound, ask the server whose HTTP
    /// side is at this URL (`http://host:port`) for its state (`POST /api/handoff`, signed
    /// with the token secret both share: give the same --token-secret-file), restore it, tick
    /// on from the next tick and confirm; the old server then moves its players here. Any
    /// failure before the confirmation: exit 1 (the old server unfreezes and carries on).
    #[arg(long, value_name = "URL")]
    pub take_over_from: Option<String>,

    /// Directory the run is recorded to (`arena-<start ms>-<n>.replay` files; see
    /// `arena-server replay info`).
    #[arg(long, default_value = "replays")]
    pub replay_dir: PathBuf,
    /// Record nothing.
    #[arg(long)]
    pub no_replays: bool,
    /// A keyframe (the full quantized world) every this many ticks.
    #[arg(long, default_value_t = 300)]
    pub replay_keyframe_ticks: u32,
    /// Records waiting for the replay writer; beyond this the tick drops them (counted, and the
    /// file gets a Gap record) rather than wait. A tick's records are handed over together at
    /// its end, or early once it has made this many.
    #[arg(long, default_value_t = 65_536)]
    pub replay_queue: usize,
    /// A new replay file once the current one is this large (at the next keyframe).
    #[arg(long, default_value_t = 256)]
    pub replay_rotate_mb: u64,
    /// A new replay file once the current one is this old, seconds (at the next keyframe).
    #[arg(long, default_value_t = 3600)]
    pub replay_rotate_secs: u64,

    /// TCP address of the replay viewer (/replays and its JSON API), a listener of its own
    /// apart from the game's HTTP side; `off` serves no viewer. It serves the runs in
    /// --replay-dir, earlier runs included, with --no-replays too.
    #[arg(long, default_value = "127.0.0.1:8090", value_parser = parse_viewer_bind)]
    pub viewer_bind: std::option::Option<SocketAddr>,
    /// File holding a token (its bytes, a trailing newline trimmed, at least 16): the viewer
    /// then answers only requests that carry `Authorization: Bearer <token>` (401 otherwise).
    #[arg(long)]
    pub viewer_token_file: Option<PathBuf>,
    /// Frames responses the viewer streams at once (each re-simulates on a thread of its
    /// own); the next gets 503 with Retry-After.
    #[arg(long, default_value_t = 4)]
    pub viewer_max_streams: usize,
    /// Of those, most held at once by one address (an IPv4 address, or an IPv6 /64), so that
    /// one host's clients that never read cannot hold them all; the next from it gets 429
    /// with Retry-After. A first look at a run (building its index) takes one too. Loopback is
    /// spared under --exempt-loopback. 0: no share.
    #[arg(long, default_value_t = 2)]
    pub viewer_max_streams_per_address: usize,
    /// Runs the viewer holds open for re-simulation at once (each holds a world); a request
    /// for another run when all are busy gets 503 with Retry-After.
    #[arg(long, default_value_t = 4)]
    pub viewer_max_runs: usize,
    /// Most frames one viewer `frames` request returns.
    #[arg(long, default_value_t = 300)]
    pub viewer_max_frames: u32,
    /// Most bytes of one viewer `frames` response, KiB: frames stop once it is reached (the
    /// first frame is always sent), and the client asks again from where they stopped.
    #[arg(long, default_value_t = 2048)]
    pub viewer_max_response_kb: usize,
    /// Viewer requests one address may make a second (a burst of two seconds' worth); the
    /// excess gets 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 10.0)]
    pub viewer_requests_per_sec: f64,
    /// How long a viewer response may wait for its client to read before it is abandoned
    /// (its thread and its run freed for others).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub viewer_send_timeout: Duration,

    /// Run as an Agones GameServer (a build with the cargo feature `agones`): connect to the
    /// SDK sidecar (AGONES_SDK_GRPC_PORT, default 9357), take the public WebTransport URL from
    /// the GameServer (status.address and the host port of the port named `wt`), call Ready
    /// once bound and ticking, ping Health, keep the list `players` in step with the seats,
    /// and call Shutdown after the drain. Without a sidecar the server does not start.
    #[arg(long)]
    pub agones: bool,
    /// How often Health is pinged while the simulation ticks (a stalled simulation stops the
    /// pings, so Agones marks the server Unhealthy). Keep it under the fleet's
    /// health.periodSeconds.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub agones_health_period: Duration,
    /// With --agones: once Allocated, call Shutdown after this long without a player
    /// (session-based matches: the server goes when its match is over). Absent: never.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub agones_shutdown_when_empty: Option<Duration>,
    /// With --agones: a client id in the list `players` that never held a seat here (a
    /// matchmaker's allocation reserved the place, and its player did not come) is removed
    /// after it has been listed this long, so no-shows do not fill the server for good. Keep
    /// it above the connect tokens' lifetime. 0s: never.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub agones_reservation_ttl: Duration,
    /// With --agones: how long to wait for the SDK sidecar at start before giving up (exit 1).
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub agones_connect_timeout: Duration,
    /// A test hook: at this tick the simulation thread stops for --debug-stall-for (what a
    /// stuck tick looks like from outside: no Health pings, no snapshots).
    #[arg(long, hide = true)]
    pub debug_stall_at_tick: Option<u64>,
    /// See --debug-stall-at-tick.
    #[arg(long, hide = true, default_value = "0s", value_parser = humantime::parse_duration)]
    pub debug_stall_for: Duration,
    /// A test hook: with --take-over-from, exit 1 once the state is restored and ticking,
    /// before confirming (a new server dying mid-handoff).
    #[arg(long, hide = true)]
    pub debug_exit_before_confirm: bool,

    /// A tool instead of a server (`arena-server replay info FILE`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How snapshots are built (`--replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplicationMode {
    /// Deltas against acknowledged views, interest management, byte budget.
    Delta,
    /// The full state of every entity to every client every tick.
    Full,
}

/// The most threads `--replication-threads` may ask for (the simulation thread and its
/// helpers, each started every tick).
pub const MAX_REPLICATION_THREADS: usize = 256;

/// Game events waiting per session for its reliable stream (`--event-queue`).
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

/// The longest validity Chromium accepts for a certificate pinned by its hash.
pub const MAX_SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);
/// The shortest validity `--cert-validity` accepts (short ones are for tests): the certificate
/// must outlive its back-dating, the second its `not_before` is rounded down by, and a rotation
/// margin.
pub const MIN_SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(4);

/// `--cert-validity` within what Chromium accepts and what rotation needs.
pub fn check_validity(validity: Duration) -> Result<(), String> {
    if validity > MAX_SELF_SIGNED_VALIDITY {
        return Err(format!(
            "--cert-validity {} is over 14 days: Chromium refuses a hash-pinned certificate \
             valid that long",
            humantime::format_duration(validity)
        ));
    }
    if validity < MIN_SELF_SIGNED_VALIDITY {
        return Err(format!(
            "--cert-validity {} is under the minimum of {}",
            humantime::format_duration(validity),
            humantime::format_duration(MIN_SELF_SIGNED_VALIDITY)
        ));
    }
    Ok(())
}

/// Tools the binary runs instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Prints a connect token for one player and one server, signed with the fleet's shared
    /// secret: what a matchmaker or login service hands a player with the server it allocated
    /// (PROTOCOL.md, "Connect token format", has the format for minting it in any language).
    Token {
        /// The file holding the secret every server of the fleet reads with
        /// --token-secret-file (its bytes, a trailing newline trimmed; at least 16).
        #[arg(long)]
        secret_file: PathBuf,
        /// The server's WebTransport URL, exactly as that server's /api/connect hands it out
        /// (its --public-url, or https://<bound WT address>/): a token admits on that server
        /// only.
        #[arg(long)]
        url: String,
        /// The player's client id (one session at a time per id on a server).
        #[arg(long)]
        client_id: u64,
        /// The name the server gives the player (1-32 bytes, no control characters).
        #[arg(long, value_parser = parse_player_name)]
        name: String,
        /// How long the token stays valid.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Replay files.
    Replay {
        #[command(subcommand)]
        action: ReplayCommand,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ReplayCommand {
    /// Duration, players, ticks, keyframes, events and any gaps of a replay file.
    Info { file: PathBuf },
    /// Re-simulates a run from its start with the recorded inputs and checks that it
    /// reproduces every recorded input, event and keyframe bit for bit (the run's files, in
    /// order).
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Serves the replay viewer for one run (its files, in order) on a local port.
    View {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Address of the viewer's HTTP server.
        #[arg(long, default_value = "127.0.0.1:8090")]
        bind: SocketAddr,
    },
}

/// The fewest bytes a token secret may have, from a flag or a file: shorter ones are guessable
/// offline from one token.
pub const MIN_TOKEN_SECRET: usize = 16;

/// Reads a token secret file: its bytes, one trailing newline (`\n` or `\r\n`) trimmed, at
/// least [`MIN_TOKEN_SECRET`] of them. The server's `--token-secret-file` and the `token`
/// tool read it the same way, so a secret that works for one works for the other.
pub fn read_token_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.len() < MIN_TOKEN_SECRET {
        return Err(format!(
            "{}: a secret of at least {MIN_TOKEN_SECRET} bytes is needed",
            path.display()
        ));
    }
    Ok(text.to_vec())
}

/// A player's name as `Hello` allows it: 1 to [`MAX_NAME_LEN`] bytes, no control characters.
///
/// [`MAX_NAME_LEN`]: arena_shared::protocol::MAX_NAME_LEN
fn parse_player_name(s: &str) -> Result<String, String> {
    let max = arena_shared::protocol::MAX_NAME_LEN;
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(format!(
            "a name has 1 to {max} bytes and no control characters"
        ));
    }
    Ok(s.to_string())
}

/// `--token-secret`: taken as bytes, at least [`MIN_TOKEN_SECRET`] of them.
fn parse_token_secret(s: &str) -> Result<String, String> {
    if s.len() < MIN_TOKEN_SECRET {
        return Err(format!(
            "a secret of at least {MIN_TOKEN_SECRET} bytes is needed (got {})",
            s.len()
        ));
    }
    Ok(s.to_string())
}

/// `--viewer-bind`: an address, or `off`.
fn parse_viewer_bind(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{e} (an address such as 127.0.0.1:8090, or off)"))
}

/// A humantime duration above zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be above zero".into());
    }
    Ok(d)
}

/// The longest `--handoff-spread`: moved players are away from the game at least until their
/// delay is over, so a long window is a long outage for some of them.
pub const MAX_HANDOFF_SPREAD: Duration = Duration::from_secs(60);

/// `--handoff-spread`: a humantime duration up to [`MAX_HANDOFF_SPREAD`] (0: everyone at once).
fn parse_handoff_spread(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX_HANDOFF_SPREAD {
        return Err(format!(
            "{} is longer than {}",
            humantime::format_duration(d),
            humantime::format_duration(MAX_HANDOFF_SPREAD)
        ));
    }
    Ok(d)
}

/// `--cert-validity`: a humantime duration within what Chromium accepts.
fn parse_cert_validity(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    check_validity(d)?;
    Ok(d)
}

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["arena-server"])
    }
}

impl Config {
    /// Fixed simulation step, in seconds.
    pub fn dt(&self) -> f32 {
        1.0 / f32::from(self.tick_rate)
    }

    /// The map these settings generate (the same on every call: it is seeded).
    pub fn map(&self) -> arena_shared::map::Map {
        arena_shared::map::Map::generate(arena_shared::map::MapParams {
            seed: self.seed,
            width: self.world_size,
            height: self.world_size,
            obstacles: self.obstacles,
        })
    }

    /// A duration in whole ticks (rounded to the nearest, at least `min`).
    pub fn ticks(&self, d: Duration, min: u32) -> u32 {
        ((d.as_secs_f64() * f64::from(self.tick_rate)).round() as u32).max(min)
    }

    /// Keep-alive interval derived from the idle timeout.
    pub fn keep_alive(&self) -> Duration {
        self.idle_timeout / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.wt_bind, "127.0.0.1:4433".parse().unwrap());
        assert_eq!(c.http_bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((c.tick_rate, c.npcs, c.world_size), (30, 1000, 4096.0));
        assert!(c.cert.is_none() && c.public_url.is_none());
    }

    #[test]
    fn cert_needs_key_and_tick_rate_is_bounded() {
        assert!(Config::try_parse_from(["arena-server", "--cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["arena-server", "--tick-rate", "0"]).is_err());
        let c = Config::try_parse_from([
            "arena-server",
            "--wt-bind",
            "127.0.0.1:0",
            "--token-ttl",
            "2m",
        ])
        .unwrap();
        assert_eq!(c.wt_bind.port(), 0);
        assert_eq!(c.token_ttl, Duration::from_secs(120));
    }

    #[test]
    fn replication_threads_are_bounded() {
        // Each is started every tick: a count that large is a mistake, not a setting.
        assert_eq!(
            Config::default().replication_threads,
            0,
            "one per CPU and one more"
        );
        let c = Config::try_parse_from(["arena-server", "--replication-threads", "256"]).unwrap();
        assert_eq!(c.replication_threads, 256);
        assert!(Config::try_parse_from(["arena-server", "--replication-threads", "257"]).is_err());
    }

    #[test]
    fn a_full_budget_re_ranks_every_other_tick_and_at_most_one_in_eight() {
        assert_eq!(Config::default().rerank_ticks, 2);
        let c = Config::try_parse_from(["arena-server", "--rerank-ticks", "1"]).unwrap();
        assert_eq!(c.rerank_ticks, 1);
        let c = Config::try_parse_from(["arena-server", "--rerank-ticks", "8"]).unwrap();
        assert_eq!(c.rerank_ticks, 8);
        for refused in ["0", "9"] {
            assert!(
                Config::try_parse_from(["arena-server", "--rerank-ticks", refused]).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_handoff_spread_is_two_seconds_and_at_most_a_minute() {
        assert_eq!(Config::default().handoff_spread, Duration::from_secs(2));
        let c = Config::try_parse_from(["arena-server", "--handoff-spread", "60s"]).unwrap();
        assert_eq!(c.handoff_spread, MAX_HANDOFF_SPREAD);
        let err = Config::try_parse_from(["arena-server", "--handoff-spread", "61s"])
            .expect_err("over the bound")
            .to_string();
        assert!(err.contains("longer than 1m"), "{err}");
    }

    #[test]
    fn a_token_secret_has_at_least_sixteen_bytes() {
        let err = Config::try_parse_from(["arena-server", "--token-secret", "hunter2"])
            .expect_err("7 bytes")
            .to_string();
        assert!(err.contains("at least 16 bytes"), "{err}");
        let c = Config::try_parse_from(["arena-server", "--token-secret", "0123456789abcdef"])
            .expect("16 bytes");
        assert_eq!(c.token_secret.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn the_viewer_listens_on_loopback_8090_unless_moved_or_off() {
        assert_eq!(
            Config::default().viewer_bind,
            Some("127.0.0.1:8090".parse().unwrap())
        );
        let off = Config::try_parse_from(["arena-server", "--viewer-bind", "off"]).unwrap();
        assert_eq!(off.viewer_bind, None);
        let moved =
            Config::try_parse_from(["arena-server", "--viewer-bind", "127.0.0.1:0"]).unwrap();
        assert_eq!(moved.viewer_bind, Some("127.0.0.1:0".parse().unwrap()));
        assert!(Config::try_parse_from(["arena-server", "--viewer-bind", "nowhere"]).is_err());
    }

    #[test]
    fn cert_validity_is_at_most_fourteen_days_and_short_ones_parse() {
        let c = Config::default();
        assert_eq!(c.cert_validity, Duration::from_secs(13 * 24 * 3600));
        assert_eq!(c.cert_rotate_before, Duration::from_secs(2 * 24 * 3600));
        let err = Config::try_parse_from(["arena-server", "--cert-validity", "15days"])
            .expect_err("over 14 days")
            .to_string();
        assert!(err.contains("over 14 days"), "{err}");
        assert!(Config::try_parse_from(["arena-server", "--cert-validity", "2s"]).is_err());
        let c = Config::try_parse_from([
            "arena-server",
            "--cert-validity",
            "16s",
            "--cert-rotate-before",
            "4s",
        ])
        .unwrap();
        assert_eq!(
            (c.cert_validity, c.cert_rotate_before),
            (Duration::from_secs(16), Duration::from_secs(4))
        );
    }
}
