//! Who is who: player names by snapshot id, for [`WhoIs`](arena_shared::protocol::WhoIs).
//!
//! Snapshots carry ids only (a name in every entity record would cost bytes every tick for
//! something that never changes), so a client asks for the names of the players it sees and
//! keeps them. The simulation owns the directory's contents: hooks on the `Player` component
//! list a name when a player entity is spawned (or resumed) and unlist it when the entity goes,
//! whichever system despawns it. Sessions read it from their network tasks, so it sits behind a
//! lock rather than in the world. It holds one entry per player entity, live or lingering, so
//! `--max-clients` bounds it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arena_shared::protocol::PlayerName;
use bevy_ecs::lifecycle::HookContext;
use bevy_ecs::prelude::*;
use bevy_ecs::world::DeferredWorld;

use super::components::{NetId, Player};

/// Player names by snapshot id.
#[derive(Debug, Default)]
pub struct Names {
    by_id: RwLock<HashMap<u32, Arc<str>>>,
}

impl Names {
    pub fn insert(&self, id: u32, name: &str) {
        self.write().insert(id, Arc::from(name));
    }

    pub fn remove(&self, id: u32) {
        self.write().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names of those of `ids` that are players, in `ids`' order.
    pub fn lookup(&self, ids: &[u32]) -> Vec<PlayerName> {
        let by_id = self.read();
        ids.iter()
            .filter_map(|&entity| {
                by_id.get(&entity).map(|name| PlayerName {
                    entity,
                    name: name.to_string(),
                })
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, Arc<str>>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, Arc<str>>> {
        self.by_id.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The simulation's handle on the directory the network side reads. Absent (replays, unit
/// tests that do not need it): the hooks do nothing.
#[derive(Resource, Clone)]
pub struct NameDirectory(pub Arc<Names>);

/// `Player`'s insert hook: lists the entity's name under its snapshot id.
pub(super) fn on_player_insert(world: DeferredWorld, ctx: HookContext) {
    let (Some(dir), Some(player), Some(id)) = (
        world.get_resource::<NameDirectory>(),
        world.get::<Player>(ctx.entity),
        world.get::<NetId>(ctx.entity),
    ) else {
        return;
    };
    dir.0.insert(id.0, &player.name);
}

/// `Player`'s discard hook (removed, replaced or despawned): unlists it.
pub(super) fn on_player_discard(world: DeferredWorld, ctx: HookContext) {
    let (Some(dir), Some(id)) = (
        world.get_resource::<NameDirectory>(),
        world.get::<NetId>(ctx.entity),
    ) else {
        return;
    };
    dir.0.remove(id.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::components::Kind;
    use arena_shared::protocol::EntityKind;

    fn player(world: &mut World, id: u32, name: &str) -> Entity {
        world
            .spawn((
                NetId(id),
                Kind(EntityKind::Player),
                Player {
                    client_id: u64::from(id),
                    name: name.into(),
                },
            ))
            .id()
    }

    #[test]
    fn names_follow_player_entities_whatever_despawns_them() {
        let names = Arc::new(Names::default());
        let mut world = World::new();
        world.insert_resource(NameDirectory(names.clone()));
        let a = player(&mut world, 7, "ada");
        let b = player(&mut world, 9, "bob");
        world.spawn((NetId(8), Kind(EntityKind::Npc)));
        assert_eq!(
            names.lookup(&[9, 8, 7, 100]),
            [
                PlayerName {
                    entity: 9,
                    name: "bob".into()
                },
                PlayerName {
                    entity: 7,
                    name: "ada".into()
                }
            ],
            "players only, in the order asked"
        );
        // A new Player value on the same entity (a resume under another name) replaces it.
        world.entity_mut(a).insert(Player {
            client_id: 7,
            name: "ada2".into(),
        });
        assert_eq!(names.lookup(&[7])[0].name, "ada2");
        world.despawn(a);
        world.entity_mut(b).remove::<Player>();
        assert!(names.is_empty(), "{:?}", names.lookup(&[7, 9]));
    }

    #[test]
    fn without_a_directory_the_hooks_do_nothing() {
        let mut world = World::new();
        let a = player(&mut world, 1, "x");
        world.despawn(a);
    }
}
