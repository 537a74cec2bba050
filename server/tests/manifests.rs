//! The Kubernetes manifests in `deploy/agones/` against what the server and its image expect:
//! the ports by name, protocol and number, the `players` list and its capacity, the token
//! secret's mount, the health period, the drain, the user. Kubernetes and the Agones controller
//! cannot run on this project's machines, so these checks are what stands between a renamed
//! flag or port and a fleet that never becomes Ready.
//!
//! The server's side of each check comes from the server itself: its flag parser applied to
//! the image's ENTRYPOINT followed by the Fleet container's args (a misspelt flag fails), and
//! the names in `arena_server::fleet`.

mod deploy;

use std::collections::BTreeSet;
use std::path::Path;

use arena_server::Config;
use arena_server::config::Command;
use arena_server::fleet::{HTTP_PORT, MAX_LIST_CAPACITY, PLAYERS_LIST, WT_PORT};
use clap::Parser;
use deploy::{Containerfile, effective_config};
use yaml_rust2::{Yaml, YamlLoader};

/// The Secret the fleet mounts and the key in it that holds the token secret.
const SECRET_NAME: &str = "arena-token-secret";
const SECRET_KEY: &str = "secret";

/// Every YAML document under `deploy/agones/`, with the file it came from.
fn documents() -> Vec<(String, Yaml)> {
    let dir = deploy::root().join("deploy").join("agones");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        docs.extend(parsed.into_iter().map(|d| (name.clone(), d)));
    }
    docs
}

/// The one document of this kind.
fn the(kind: &str) -> Yaml {
    let mut found: Vec<_> = documents()
        .into_iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/agones/");
    found.remove(0).1
}

/// The node at a dotted path (`spec.template.spec`), or a panic naming the path.
fn at<'a>(doc: &'a Yaml, path: &str) -> &'a Yaml {
    let mut node = doc;
    for key in path.split('.') {
        node = &node[key];
        assert!(!node.is_badvalue(), "no {path} (missing at {key:?})");
    }
    node
}

fn int(doc: &Yaml, path: &str) -> i64 {
    at(doc, path)
        .as_i64()
        .unwrap_or_else(|| panic!("{path} is not an integer: {:?}", at(doc, path)))
}

fn string<'a>(doc: &'a Yaml, path: &str) -> &'a str {
    at(doc, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string: {:?}", at(doc, path)))
}

fn array<'a>(doc: &'a Yaml, path: &str) -> &'a [Yaml] {
    at(doc, path)
        .as_vec()
        .unwrap_or_else(|| panic!("{path} is not a list: {:?}", at(doc, path)))
}

/// The Fleet's GameServer spec (`spec.template.spec`).
fn gameserver(fleet: &Yaml) -> &Yaml {
    at(fleet, "spec.template.spec")
}

/// The Fleet's one container: the server.
fn container(fleet: &Yaml) -> &Yaml {
    let containers = array(gameserver(fleet), "template.spec.containers");
    assert_eq!(
        containers.len(),
        1,
        "one container in the pod (the sidecar is Agones')"
    );
    &containers[0]
}

/// The server's configuration in the Fleet's pod: the image's ENTRYPOINT, then the args.
fn fleet_config(fleet: &Yaml) -> Config {
    let args: Vec<String> = array(container(fleet), "args")
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("an arg that is not a string (quote it): {a:?}"))
                .to_string()
        })
        .collect();
    effective_config(&Containerfile::shipped().entrypoint(), &args)
}

/// The pod volume mounted at `path` in the server's container, and whether read-only.
fn volume_at<'a>(fleet: &'a Yaml, path: &Path) -> (&'a Yaml, bool) {
    let mounts = array(container(fleet), "volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(path))
        .unwrap_or_else(|| panic!("no volume mounted at {}", path.display()));
    let name = string(mount, "name");
    let volume = array(gameserver(fleet), "template.spec.volumes")
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("the mount {name} names no volume of the pod"));
    (volume, mount["readOnly"].as_bool() == Some(true))
}

#[test]
fn every_manifest_parses_and_is_an_agones_or_kubernetes_kind_we_ship() {
    let kinds: BTreeSet<(String, String, String)> = documents()
        .iter()
        .map(|(file, d)| {
            (
                file.clone(),
                string(d, "apiVersion").to_string(),
                string(d, "kind").to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("fleet.yaml", "agones.dev/v1", "Fleet"),
        (
            "fleetautoscaler.yaml",
            "autoscaling.agones.dev/v1",
            "FleetAutoscaler",
        ),
        (
            "gameserverallocation.yaml",
            "allocation.agones.dev/v1",
            "GameServerAllocation",
        ),
    ]
    .iter()
    .map(|(f, a, k)| (f.to_string(), a.to_string(), k.to_string()))
    .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn fleet_ports_are_the_images_by_name_protocol_and_number() {
    let fleet = the("Fleet");
    let config = fleet_config(&fleet);
    let ports: Vec<(String, String, i64)> = array(gameserver(&fleet), "ports")
        .iter()
        .map(|p| {
            (
                string(p, "name").to_string(),
                // Agones' default protocol is UDP; ours are written out.
                string(p, "protocol").to_string(),
                int(p, "containerPort"),
            )
        })
        .collect();
    let wt = i64::from(config.wt_bind.port());
    let http = i64::from(config.http_bind.port());
    assert_eq!(
        ports,
        [
            (WT_PORT.to_string(), "UDP".to_string(), wt),
            (HTTP_PORT.to_string(), "TCP".to_string(), http),
        ],
        "the Fleet's ports against the server's binds in the pod ({} and {})",
        config.wt_bind,
        config.http_bind
    );
    // The image says the same (EXPOSE is documentation for whoever runs it).
    let mut exposed = Containerfile::shipped().exposed();
    exposed.sort();
    let mut expected = vec![
        (config.wt_bind.port(), "udp".to_string()),
        (config.http_bind.port(), "tcp".to_string()),
    ];
    expected.sort();
    assert_eq!(exposed, expected, "deploy/Containerfile's EXPOSE");
}

#[test]
fn players_list_capacity_is_the_servers_max_clients_within_agones_cap() {
    let fleet = the("Fleet");
    let config = fleet_config(&fleet);
    assert!(config.agones, "the Fleet's server runs with --agones");
    assert!(
        config.no_guest_tokens,
        "the Fleet's server admits only matchmaker tokens (--no-guest-tokens)"
    );
    let capacity = int(
        gameserver(&fleet),
        &format!("lists.{PLAYERS_LIST}.capacity"),
    );
    assert_eq!(
        usize::try_from(capacity).ok(),
        Some(config.max_clients),
        "list {PLAYERS_LIST:?} capacity against --max-clients"
    );
    assert!(
        config.max_clients <= MAX_LIST_CAPACITY,
        "Agones caps a list at {MAX_LIST_CAPACITY}"
    );
}

#[test]
fn token_secret_is_mounted_read_only_where_the_server_reads_it() {
    let fleet = the("Fleet");
    let config = fleet_config(&fleet);
    let file = config
        .token_secret_file
        .expect("the Fleet's server reads --token-secret-file");
    let dir = file.parent().expect("a file in a directory");
    let (volume, read_only) = volume_at(&fleet, dir);
    assert!(read_only, "the secret's mount is read-only");
    assert_eq!(string(volume, "secret.secretName"), SECRET_NAME);
    // The file the server reads is the Secret's key.
    let items = array(volume, "secret.items");
    let file_name = file
        .file_name()
        .and_then(|f| f.to_str())
        .expect("a file name");
    assert!(
        items
            .iter()
            .any(|i| i["key"].as_str() == Some(SECRET_KEY) && i["path"].as_str() == Some(file_name)),
        "the Secret's key {SECRET_KEY:?} lands at {}: {items:?}",
        file.display()
    );
    // The command the Fleet's comment gives makes that Secret with that key.
    let text = deploy::read("deploy/agones/fleet.yaml");
    let command = format!("kubectl create secret generic {SECRET_NAME} --from-file={SECRET_KEY}=");
    assert!(
        text.contains(&command),
        "fleet.yaml says how to make the Secret: {command}"
    );
}

#[test]
fn replays_go_to_a_volume_at_the_images_replay_directory() {
    let fleet = the("Fleet");
    let config = fleet_config(&fleet);
    assert!(!config.no_replays);
    let (volume, read_only) = volume_at(&fleet, &config.replay_dir);
    assert!(!read_only, "the replay volume is writable");
    assert!(
        !volume["emptyDir"].is_badvalue() || !volume["persistentVolumeClaim"].is_badvalue(),
        "an emptyDir or a PersistentVolumeClaim: {volume:?}"
    );
    let image = Containerfile::shipped();
    assert_eq!(
        image.runtime().all("VOLUME"),
        [config.replay_dir.to_str().expect("UTF-8 path")],
        "the image's VOLUME is the replay directory"
    );
}

#[test]
fn health_period_is_longer_than_the_servers_ping_period() {
    let fleet = the("Fleet");
    let config = fleet_config(&fleet);
    let health = at(gameserver(&fleet), "health");
    assert_ne!(
        health["disabled"].as_bool(),
        Some(true),
        "health checking on"
    );
    let period = int(health, "periodSeconds");
    let ping = config.agones_health_period;
    assert!(
        u128::try_from(period).is_ok_and(|p| p * 1000 > ping.as_millis()),
        "health.periodSeconds {period} must exceed the server's ping period {ping:?}: a \
         period with no ping in it counts as a failure"
    );
    assert!(int(health, "failureThreshold") >= 1);
    assert!(int(health, "initialDelaySeconds") >= 0);
}

#[test]
fn termination_grace_outlasts_the_drain() {
    let fleet = the("Fleet");
    let config = fleet_config(&fleet);
    let grace = int(
        gameserver(&fleet),
        "template.spec.terminationGracePeriodSeconds",
    );
    assert!(
        grace > i64::from(config.drain_secs),
        "terminationGracePeriodSeconds {grace} must exceed --drain-secs {}: else SIGKILL \
         cuts the drain and Shutdown is never called",
        config.drain_secs
    );
}

#[test]
fn pod_runs_as_the_images_non_root_user() {
    let fleet = the("Fleet");
    let pod = at(gameserver(&fleet), "template.spec.securityContext");
    assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true), "runAsNonRoot");
    let image = Containerfile::shipped();
    let user = image.runtime().last("USER").expect("the image has a USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    assert_eq!(
        int(pod, "runAsUser").to_string(),
        uid,
        "the image's USER {user}"
    );
    assert_eq!(
        int(pod, "runAsGroup").to_string(),
        gid,
        "the image's USER {user}"
    );
    assert_eq!(
        int(pod, "fsGroup").to_string(),
        gid,
        "volumes owned by its group"
    );
    assert_ne!(uid, "0");
    for kind in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            let path = format!("resources.{kind}.{what}");
            assert!(at(container(&fleet), &path).as_str().is_some(), "{path}");
        }
    }
}

#[test]
fn autoscaler_scales_the_fleet_on_free_room_in_players() {
    let fleet = the("Fleet");
    let autoscaler = the("FleetAutoscaler");
    assert_eq!(
        string(&autoscaler, "spec.fleetName"),
        string(&fleet, "metadata.name")
    );
    assert_eq!(string(&autoscaler, "spec.policy.type"), "List");
    let list = at(&autoscaler, "spec.policy.list");
    assert_eq!(string(list, "key"), PLAYERS_LIST);
    let capacity = int(
        gameserver(&fleet),
        &format!("lists.{PLAYERS_LIST}.capacity"),
    );
    let (buffer, min, max) = (
        int(list, "bufferSize"),
        int(list, "minCapacity"),
        int(list, "maxCapacity"),
    );
    // Agones' own rules for a List policy, and room for at least one server.
    assert!(
        0 < buffer && buffer <= min && min < max,
        "{buffer} {min} {max}"
    );
    assert!(
        max >= capacity,
        "maxCapacity {max} holds at least one server ({capacity})"
    );
}

#[test]
fn allocation_selects_allocated_then_ready_servers_with_room_in_players() {
    let fleet_name = string(&the("Fleet"), "metadata.name").to_string();
    let allocation = the("GameServerAllocation");
    let selectors = array(&allocation, "spec.selectors");
    let states: Vec<&str> = selectors
        .iter()
        .map(|s| string(s, "gameServerState"))
        .collect();
    assert_eq!(
        states,
        ["Allocated", "Ready"],
        "backfill running servers first"
    );
    for s in selectors {
        // The label key has dots in it: no dotted path.
        let label = &s["matchLabels"]["agones.dev/fleet"];
        assert_eq!(label.as_str(), Some(fleet_name.as_str()), "{s:?}");
        assert!(
            int(s, &format!("lists.{PLAYERS_LIST}.minAvailable")) >= 1,
            "a selector asks for a free seat in {PLAYERS_LIST:?}: {s:?}"
        );
    }
    // The seat is taken by the player's client id, as the server lists its players.
    let added = array(&allocation, &format!("spec.lists.{PLAYERS_LIST}.addValues"));
    assert_eq!(added.len(), 1, "one player per allocation");
    let id = added[0].as_str().expect("a quoted value");
    assert!(id.parse::<u64>().is_ok(), "a client id in decimal: {id:?}");
    let priority = &array(&allocation, "spec.priorities")[0];
    assert_eq!(
        (string(priority, "type"), string(priority, "key")),
        ("List", PLAYERS_LIST)
    );
}

/// The `arena-server token ...` command that gameserverallocation.yaml's comment gives, as
/// words (its continued lines joined).
fn token_command_in_allocation_comment() -> Vec<String> {
    let text = deploy::read("deploy/agones/gameserverallocation.yaml");
    let mut words = Vec::new();
    for line in text.lines() {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let comment = comment.trim();
        if words.is_empty() && !comment.starts_with("arena-server token") {
            continue;
        }
        words.extend(
            comment
                .trim_end_matches('\\')
                .split_whitespace()
                .map(str::to_string),
        );
        if !comment.ends_with('\\') {
            break;
        }
    }
    assert!(
        !words.is_empty(),
        "gameserverallocation.yaml says how to mint the token"
    );
    words
}

#[test]
fn a_reservation_outlives_the_token_minted_for_its_player() {
    let config = fleet_config(&the("Fleet"));
    let words = token_command_in_allocation_comment();
    let minted = Config::try_parse_from(&words)
        .unwrap_or_else(|e| panic!("the server refuses the documented {words:?}:\n{e}"));
    let Some(Command::Token { ttl, client_id, .. }) = minted.command else {
        panic!("{words:?} is not the token tool");
    };
    // The allocation reserves the seat under the id the token is for.
    let allocation = the("GameServerAllocation");
    let added = array(&allocation, &format!("spec.lists.{PLAYERS_LIST}.addValues"));
    assert_eq!(added[0].as_str(), Some(client_id.to_string().as_str()));
    // A reservation freed while its token still admits would let a late player take a seat
    // that another allocation was given meanwhile.
    let reservation = config.agones_reservation_ttl;
    assert!(
        reservation.is_zero() || ttl < reservation,
        "the token lives {ttl:?}, the reservation {reservation:?} (--agones-reservation-ttl)"
    );
}
