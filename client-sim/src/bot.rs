//! One bot's life: connect, play until its time is up, reconnect when dropped, leave. What it
//! sends and how it counts what it sees is [`crate::player`] (sans-IO, over the shared client
//! session); each session runs on the bot's flock ([`crate::flock`]: its QUIC connection, the
//! frame timer, the impairment's delay lines), and this task owns what lies between sessions:
//! `/api/connect`, the reconnect backoff and the route after a move. It sleeps while the
//! session plays.
//!
//! While playing, a bot runs a frame when its clock says the next input is due (the session
//! sends an input per server tick that became due, and a ping every 250 ms) and hands the
//! player every datagram and every byte of the stream as they arrive (an idle bot runs no
//! frames and only acknowledges snapshots). It records where its own entity was at the first
//! and the last snapshot of its last session, and the sum of the movement it asked for, so a
//! test can check that the server moved it that way.
//!
//! A failed connect (HTTP, QUIC, `Reject`) or a lost session (`Disconnect`, connection lost)
//! is retried after a [`Backoff`] delay until the bot's deadline, its launch plus its play
//! time. Every attempt fetches a fresh token and certificate hash from `/api/connect` (a
//! restarted server has a new self-signed certificate) and presents the resume token of its
//! last session: within the server's grace period it gets its entity back
//! (`Welcome::resumed`), after it a new one. A move (`Disconnect(Moved)`) is no failure: the
//! bot waits the server's hint and goes straight to the new server ([`Route`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, STABLE_SESSION};
use crate::behaviour::Behaviour;
use crate::connect::{self, ClientError, ConnectInfo};
use crate::flock::{Dial, Ended, Flocks};
use crate::impair::ImpairConfig;
use crate::live::{self, Held, LiveStats};
use crate::outcome::{BotOutcome, Session};
use crate::player::{Player, Welcomed};
use crate::route::{Attempt, Route};

/// Mixed into a bot's seed for its backoff jitter, so the jitter is not its random walk.
pub const BACKOFF_SALT: u64 = 0xB4C0_FF5A_17E7_0001;

#[derive(Debug, Clone)]
pub struct BotConfig {
    /// The server's HTTP side, `http://HOST:PORT`.
    pub server: String,
    pub name: String,
    /// Its place in the swarm (0-based).
    pub index: u32,
    /// How long after its launch the bot leaves, however much of it was spent connecting.
    pub play_for: Duration,
    pub behaviour: Behaviour,
    pub seed: u64,
    pub idle_timeout: Duration,
    /// Network impairment applied to what this bot sends and receives (none by default).
    pub impair: ImpairConfig,
    /// The swarm's start: [`Session::welcomed_at`] counts from it.
    pub swarm_start: tokio::time::Instant,
    /// Counters for the progress line, shared by the swarm.
    pub live: Arc<LiveStats>,
    /// Cancelled: the bot leaves now, as if its time were up.
    pub stop: CancellationToken,
    /// Dial this address instead of the one `/api/connect` names (a proxy, a port forward, a
    /// test's relay).
    pub connect_via: Option<std::net::SocketAddr>,
    /// The swarm's flocks: this bot's sessions run on flock `index / per_flock`, with other
    /// bots'.
    pub flocks: Arc<Flocks>,
}

/// Runs one bot to its deadline (or until `stop`), reconnecting as needed. Never panics on
/// anything the server sends.
pub async fn run(config: BotConfig) -> BotOutcome {
    let mut out = BotOutcome::new(config.name.clone(), config.index, config.behaviour);
    let deadline = tokio::time::Instant::now() + config.play_for;
    let mut backoff = Backoff::new(config.seed ^ BACKOFF_SALT);
    let live = config.live.clone();
    // One player for all its sessions: the session presents the last one's resume token at
    // every reconnect (the server ignores one it no longer knows).
    let mut player = Player::new(&config.name, config.behaviour, config.seed, live.clone());
    // The player's clock: any monotonic origin will do.
    let origin = Instant::now();
    let mut route = Route::new(config.server.clone());
    let flock = match config.flocks.of(config.index) {
        Ok(f) => f,
        Err(e) => {
            live::bump(&live.failed);
            out.count_error(&e);
            out.connect = Err(e.to_string());
            return out;
        }
    };
    // When the next attempt is due: the end of the wait before it, if it waited.
    let mut next_due = None;
    loop {
        let attempt = tokio::time::Instant::now();
        let due = next_due.take().unwrap_or(attempt).min(attempt);
        let next = route.next_attempt();
        let resuming = matches!(next, Attempt::Resume { .. });
        // The fetch is awaited boxed: the bot's task then holds room for it only while it
        // runs, not all its life (the task lives for the bot's whole run, thousands of them).
        let info = tokio::select! {
            i = Box::pin(connect_info(&config, next)) => Some(i),
            _ = tokio::time::sleep_until(deadline) => None,
            _ = config.stop.cancelled() => None,
        };
        // The session, on the bot's flock: the player and the outcome go there and come back.
        let ended = match info {
            None => Ended::OutOfTime,
            Some(Err(e)) => Ended::Failed(e),
            Some(Ok(info)) => {
                player.connect(&info.token);
                let played = flock
                    .session(Dial {
                        info,
                        player,
                        out,
                        idle_timeout: config.idle_timeout,
                        idle: config.behaviour == Behaviour::Idle,
                        impair: config.impair,
                        impair_seed: config.seed ^ 0x1A9A_1A9A,
                        live: live.clone(),
                        origin,
                        deadline,
                        stop: config.stop.clone(),
                        attempt,
                        due,
                        swarm_start: config.swarm_start,
                    })
                    .await;
                let Some(played) = played else {
                    // Its flock's task is gone, and this bot's record with it.
                    let mut out =
                        BotOutcome::new(config.name.clone(), config.index, config.behaviour);
                    let e = ClientError::Closed("the bot's flock ended mid-session".into());
                    out.count_error(&e);
                    out.connect = Err(e.to_string());
                    return out;
                };
                player = played.player;
                out = played.out;
                played.ended
            }
        };
        // The server's hint, when it refused us for a reason that waiting cures.
        let mut hint = Duration::ZERO;
        // A move's wait: exactly the server's hint, no backoff.
        let mut moved_wait = None;
        match ended {
            Ended::OutOfTime => {
                // Its time ran out mid-attempt: a failure only if it never had a session and
                // nothing else went wrong before (a slow server that never answered).
                if !out.connected() && out.errors.is_empty() {
                    out.connect = Err("still connecting when its time was up".into());
                    out.count_error(&ClientError::Timeout("connect"));
                }
                break;
            }
            // The new server does not know the bot: it asks for a token there at once.
            Ended::Failed(e) if resuming && Route::resume_refused(&e) => continue,
            Ended::Failed(e) => {
                if let ClientError::Rejected { retry_after_ms, .. } = &e {
                    hint = Duration::from_millis(u64::from(*retry_after_ms));
                }
                live::bump(&live.failed);
                out.count_error(&e);
                if !out.connected() {
                    out.connect = Err(e.to_string());
                }
            }
            Ended::Played {
                welcomed, ended, ..
            } => {
                let played = welcomed.elapsed();
                out.played += played;
                let mut lost = ended.err();
                if let Some(ClientError::Moved {
                    to,
                    reconnect_after_ms,
                }) = lost.take_if(|e| matches!(e, ClientError::Moved { .. }))
                {
                    moved_wait = Some(route.moved(to, reconnect_after_ms));
                }
                if let Some(ClientError::Disconnected {
                    reconnect_after_ms, ..
                }) = &lost
                {
                    hint = Duration::from_millis(u64::from(*reconnect_after_ms));
                }
                if let Some(e) = &lost {
                    out.count_error(e);
                    out.disconnected = Some(e.to_string());
                }
                if let Some(session) = out.sessions.last_mut() {
                    session.played = played;
                    session.lost = lost.as_ref().map(ToString::to_string);
                }
                if lost.is_none() && moved_wait.is_none() {
                    break; // its time is up
                }
                if played >= STABLE_SESSION {
                    backoff.reset();
                }
            }
        }
        // Never sooner than the server asked; jitter still spreads the bots it refused.
        let delay = moved_wait.unwrap_or_else(|| backoff.next_delay().max(hint));
        if tokio::time::Instant::now() + delay >= deadline {
            break;
        }
        let _waiting = Held::new(&live.retrying);
        let wake = tokio::time::Instant::now() + delay;
        next_due = Some(wake);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = config.stop.cancelled() => break,
        }
    }
    out
}

/// Where this attempt dials: `/api/connect`'s answer, or the server a move named.
async fn connect_info(config: &BotConfig, attempt: Attempt) -> Result<ConnectInfo, ClientError> {
    let mut info = match attempt {
        Attempt::Connect { server } => connect::fetch_connect_info(&server, &config.name).await?,
        Attempt::Resume { to } => ConnectInfo::moved(&to),
    };
    if let Some(addr) = config.connect_via {
        info.url = connect::url_via(&info.url, addr);
    }
    Ok(info)
}

/// A session's `Welcome` came at `welcomed`: counted, live and in the outcome (its flock calls
/// this as it happens, so that the swarm's watchers see it then).
pub(crate) fn welcomed(
    out: &mut BotOutcome,
    live: &LiveStats,
    welcome: &Welcomed,
    (attempt, due): (tokio::time::Instant, tokio::time::Instant),
    welcomed: tokio::time::Instant,
    swarm_start: tokio::time::Instant,
) {
    let connect = welcomed - attempt;
    live.welcomed();
    if out.connected() {
        live::bump(&live.reconnects);
    } else {
        out.connect = Ok(connect);
    }
    if welcome.resumed {
        live::bump(&live.resumes);
    }
    out.sessions.push(Session {
        welcomed_at: welcomed.saturating_duration_since(swarm_start),
        connect,
        due_at: due.saturating_duration_since(swarm_start),
        played: Duration::ZERO,
        lost: None,
        entity: welcome.entity,
        resumed: welcome.resumed,
    });
}
