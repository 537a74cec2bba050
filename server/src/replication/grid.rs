//! A uniform spatial grid over the frame, rebuilt every tick with a counting sort (O(n), no
//! allocation once warm). Cells are half the interest radius, so a query touches at most 5x5
//! cells. What a client's interest needs of each entity (index, id, position, the tick its
//! record is current from) is copied into the grid in cell order: a query reads memory in
//! order instead of visiting the frame entry of every entity it tests.

use glam::Vec2;

use super::frame::WorldFrame;

/// One entity as a query sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Item {
    /// Index in the frame's entities.
    pub index: u32,
    pub id: u32,
    /// [`WorldFrame::current_from`] of the entity.
    pub current_from: u32,
    pub pos: Vec2,
}

#[derive(Debug, Default)]
pub struct Grid {
    cell: f32,
    cols: usize,
    rows: usize,
    /// `starts[c]..starts[c + 1]` indexes `items` for cell `c`.
    starts: Vec<u32>,
    /// The frame's entities, grouped by cell.
    items: Vec<Item>,
    cell_of: Vec<u32>,
}

impl Grid {
    /// Rebuilds over `frame` for a world of `world_size` with cells of `cell` units.
    pub fn rebuild(&mut self, frame: &WorldFrame, world_size: f32, cell: f32) {
        self.cell = cell.max(1.0);
        self.cols = ((world_size / self.cell).ceil() as usize).max(1);
        self.rows = self.cols;
        let n_cells = self.cols * self.rows;
        self.starts.clear();
        self.starts.resize(n_cells + 1, 0);
        self.cell_of.clear();
        for e in &frame.entities {
            let c = self.cell_index(e.pos);
            self.cell_of.push(c as u32);
            self.starts[c + 1] += 1;
        }
        for c in 0..n_cells {
            self.starts[c + 1] += self.starts[c];
        }
        self.items.clear();
        self.items.resize(frame.entities.len(), Item::default());
        let mut fill = self.starts.clone();
        for (i, &c) in self.cell_of.iter().enumerate() {
            let slot = &mut fill[c as usize];
            let e = &frame.entities[i];
            self.items[*slot as usize] = Item {
                index: i as u32,
                id: e.id,
                current_from: frame.current_from[i],
                pos: e.pos,
            };
            *slot += 1;
        }
    }

    // `as usize` truncates, which is the floor for what is not negative, and saturates the
    // rest (negatives, NaN) to 0: no `f32::floor`, a libm call on the baseline x86-64 target,
    // for every entity of the frame each tick.
    fn clamp_col(&self, x: f32) -> usize {
        ((x / self.cell) as usize).min(self.cols - 1)
    }

    fn clamp_row(&self, y: f32) -> usize {
        ((y / self.cell) as usize).min(self.rows - 1)
    }

    fn cell_index(&self, p: Vec2) -> usize {
        let p = if p.is_finite() { p } else { Vec2::ZERO };
        self.clamp_row(p.y) * self.cols + self.clamp_col(p.x)
    }

    /// Calls `f` with every entity in the cells overlapping the square of half-side `radius`
    /// around `center` (a superset of the circle; callers test distance).
    #[inline(always)]
    pub fn query(&self, center: Vec2, radius: f32, mut f: impl FnMut(&Item)) {
        if self.cols == 0 {
            return;
        }
        let (c0, c1) = (
            self.clamp_col(center.x - radius),
            self.clamp_col(center.x + radius),
        );
        let (r0, r1) = (
            self.clamp_row(center.y - radius),
            self.clamp_row(center.y + radius),
        );
        for row in r0..=r1 {
            let first = row * self.cols + c0;
            let last = row * self.cols + c1;
            // Cells of one row are contiguous in `items`.
            let (a, b) = (self.starts[first] as usize, self.starts[last + 1] as usize);
            for item in &self.items[a..b] {
                f(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arena_shared::protocol::EntityKind;
    use arena_shared::rng::SplitMix64;

    #[test]
    fn a_query_finds_exactly_the_entities_within_the_radius_after_a_distance_test() {
        let mut rng = SplitMix64::new(5);
        let mut frame = WorldFrame::default();
        let bodies: Vec<_> = (1..=3000)
            .map(|id| {
                (
                    id,
                    EntityKind::Npc,
                    // Some beyond the world: they sit in the edge cells.
                    rng.square(-200.0, 4300.0),
                    Vec2::ZERO,
                )
            })
            .collect();
        frame.rebuild(1, 30, bodies.into_iter());
        let mut grid = Grid::default();
        grid.rebuild(&frame, 4096.0, 300.0);
        // Fixed centres, then random ones, some beyond the world's edges, with radii from
        // under a cell to several.
        let mut cases = vec![
            (Vec2::new(10.0, 10.0), 600.0),
            (Vec2::new(2048.0, 2048.0), 600.0),
            (Vec2::new(4090.0, 100.0), 600.0),
        ];
        for _ in 0..200 {
            cases.push((rng.square(-500.0, 4600.0), rng.range_f32(10.0, 1500.0)));
        }
        for (center, r) in cases {
            let mut found = Vec::new();
            grid.query(center, r, |item| {
                let i = item.index as usize;
                assert_eq!(
                    (item.id, item.pos, item.current_from),
                    (
                        frame.entities[i].id,
                        frame.entities[i].pos,
                        frame.current_from[i]
                    )
                );
                if item.pos.distance_squared(center) <= r * r {
                    found.push(item.id)
                }
            });
            found.sort_unstable();
            let expected: Vec<u32> = frame
                .entities
                .iter()
                .filter(|e| e.pos.distance_squared(center) <= r * r)
                .map(|e| e.id)
                .collect();
            assert_eq!(found, expected);
        }
    }
}
