//! A coarse uniform grid over a map's obstacles, so movement tests a body against the few
//! obstacles near it instead of all of them.
//!
//! The grid is built once per map ([`ObstacleGrid::new`]) and owns a copy of the map, so a
//! body can never be moved against one map with the grid of another. It is not part of the
//! map's encoded form: the wire and the replay headers carry the [`Map`], and every side
//! builds the same grid from it.
//!
//! Invariant: every obstacle whose open interior overlaps a query box is listed in one of the
//! cells the box touches, and [`ObstacleGrid::for_each_near`] visits the candidates in
//! ascending obstacle index, each once. A caller that applies its own exact overlap test to
//! each candidate therefore computes what a scan of every obstacle in order computes, bit for
//! bit: the obstacles the grid leaves out are exactly ones that test would have skipped.
//! Conservative cells follow from the cell function being monotonic (a multiplication by a
//! positive constant, a saturating conversion, a clamp): if two intervals overlap, their cell
//! ranges do.

use glam::Vec2;

use crate::map::{Map, Rect};

/// Side of a cell, in world units, on maps up to `MAX_CELLS_PER_AXIS` cells wide. A moving
/// body (32 units) then lies in one cell most of the time and in at most four, and a cell of
/// the default map holds about half an obstacle.
const CELL_SIZE: f32 = 256.0;
/// Bounds the grid of a very large map (its cells grow instead), and what a client allocates
/// for a map a server sent.
const MAX_CELLS_PER_AXIS: u32 = 64;
/// Cell lists longer than this in total (a map of huge, overlapping obstacles) are not worth
/// their memory: such a map gets one cell, which is a scan of every obstacle.
const MAX_ITEMS: usize = 1 << 20;
/// A query touching more cells than this scans every obstacle instead (only a body far larger
/// than a cell does), so the merge keeps its cursors on the stack.
const MAX_QUERY_CELLS: usize = 16;

/// The map and, for each cell, the indices of the obstacles overlapping it.
#[derive(Debug, Clone)]
pub struct ObstacleGrid {
    map: Map,
    cols: u32,
    rows: u32,
    /// Cells per world unit along x and y.
    inv_cell: Vec2,
    /// Cell `c` (row-major) lists `items[starts[c]..starts[c + 1]]`, in ascending order.
    starts: Vec<u32>,
    items: Vec<u32>,
}

impl ObstacleGrid {
    /// The grid for `map`: cells of [`CELL_SIZE`], at most [`MAX_CELLS_PER_AXIS`] a side.
    pub fn new(map: &Map) -> Self {
        Self::with_cells(map, cells_along(map.width), cells_along(map.height))
    }

    /// The grid for `map` with `cols` x `rows` cells (at least one each). One cell is a scan of
    /// every obstacle in order, which the tests use as the reference.
    pub(crate) fn with_cells(map: &Map, cols: u32, rows: u32) -> Self {
        let one_cell = Self {
            map: map.clone(),
            cols: 1,
            rows: 1,
            inv_cell: Vec2::ZERO,
            starts: Vec::new(),
            items: Vec::new(),
        };
        let (cols, rows) = (
            cols.clamp(1, MAX_CELLS_PER_AXIS),
            rows.clamp(1, MAX_CELLS_PER_AXIS),
        );
        let inv_cell = Vec2::new(cols as f32 / map.width, rows as f32 / map.height);
        let usable = |inv: f32| inv.is_finite() && inv > 0.0;
        if (cols, rows) == (1, 1)
            || !usable(inv_cell.x)
            || !usable(inv_cell.y)
            || u32::try_from(map.obstacles.len()).is_err()
        {
            return one_cell;
        }
        let mut grid = Self {
            cols,
            rows,
            inv_cell,
            ..one_cell
        };
        // Counting pass, then a fill pass in obstacle order: each cell's list comes out sorted.
        let mut counts = vec![0u32; (cols * rows) as usize + 1];
        let mut total = 0usize;
        for o in &map.obstacles {
            let (x0, x1, y0, y1) = grid.cell_range(o);
            total += ((x1 - x0 + 1) * (y1 - y0 + 1)) as usize;
            if total > MAX_ITEMS {
                return Self {
                    cols: 1,
                    rows: 1,
                    inv_cell: Vec2::ZERO,
                    ..grid
                };
            }
            for y in y0..=y1 {
                for x in x0..=x1 {
                    counts[(y * cols + x) as usize + 1] += 1;
                }
            }
        }
        let mut sum = 0;
        for c in &mut counts {
            sum += *c;
            *c = sum;
        }
        let mut fill = counts.clone();
        let mut items = vec![0u32; total];
        for (i, o) in map.obstacles.iter().enumerate() {
            let (x0, x1, y0, y1) = grid.cell_range(o);
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let at = &mut fill[(y * cols + x) as usize];
                    items[*at as usize] = i as u32;
                    *at += 1;
                }
            }
        }
        grid.starts = counts;
        grid.items = items;
        grid
    }

    /// The map this grid was built from.
    pub fn map(&self) -> &Map {
        &self.map
    }

    /// Calls `f` with every obstacle that may overlap `query` (a superset of those that do), in
    /// ascending index, each once. Allocates nothing.
    #[inline]
    pub fn for_each_near(&self, query: &Rect, mut f: impl FnMut(&Rect)) {
        let obstacles = &self.map.obstacles;
        self.for_each_index_near(query, |i| f(&obstacles[i]));
    }

    /// [`Self::for_each_near`] by index into the map's obstacles.
    #[inline]
    fn for_each_index_near(&self, query: &Rect, mut f: impl FnMut(usize)) {
        if self.starts.is_empty() {
            (0..self.map.obstacles.len()).for_each(f);
            return;
        }
        let (x0, x1, y0, y1) = self.cell_range(query);
        let cells = ((x1 - x0 + 1) * (y1 - y0 + 1)) as usize;
        if cells == 1 {
            let c = (y0 * self.cols + x0) as usize;
            for &i in &self.items[self.starts[c] as usize..self.starts[c + 1] as usize] {
                f(i as usize);
            }
            return;
        }
        if cells > MAX_QUERY_CELLS {
            (0..self.map.obstacles.len()).for_each(f);
            return;
        }
        // A merge of the cells' sorted lists: the smallest index not yet visited, next.
        let mut cursors = [(0usize, 0usize); MAX_QUERY_CELLS];
        let mut n = 0;
        for y in y0..=y1 {
            for x in x0..=x1 {
                let c = (y * self.cols + x) as usize;
                let (from, to) = (self.starts[c] as usize, self.starts[c + 1] as usize);
                if from < to {
                    cursors[n] = (from, to);
                    n += 1;
                }
            }
        }
        let cursors = &mut cursors[..n];
        loop {
            let mut next = u32::MAX;
            for &(at, end) in cursors.iter() {
                if at < end {
                    next = next.min(self.items[at]);
                }
            }
            if next == u32::MAX {
                return;
            }
            for (at, end) in cursors.iter_mut() {
                if *at < *end && self.items[*at] == next {
                    *at += 1;
                }
            }
            f(next as usize);
        }
    }

    /// The inclusive cell columns and rows a rectangle touches, clamped to the grid. The cell of
    /// a coordinate is monotonic in it, so two rectangles that overlap have cell ranges that
    /// do; the corners are put in order, because a rectangle from the wire may be inside out
    /// (`min` above `max`) and still overlap a box that spans it. A NaN coordinate lands in
    /// cell 0, which is harmless: a rectangle with a NaN overlaps nothing.
    #[inline]
    fn cell_range(&self, r: &Rect) -> (u32, u32, u32, u32) {
        let col = |v: f32| ((v * self.inv_cell.x) as u32).min(self.cols - 1);
        let row = |v: f32| ((v * self.inv_cell.y) as u32).min(self.rows - 1);
        let (x0, x1) = (col(r.min.x), col(r.max.x));
        let (y0, y1) = (row(r.min.y), row(r.max.y));
        (x0.min(x1), x0.max(x1), y0.min(y1), y0.max(y1))
    }
}

/// How many cells of [`CELL_SIZE`] cover `side`, capped. A side that is not a positive number
/// gets one cell (and [`ObstacleGrid::with_cells`] one cell in all).
fn cells_along(side: f32) -> u32 {
    ((side / CELL_SIZE).ceil() as u32).clamp(1, MAX_CELLS_PER_AXIS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::MapParams;

    fn near(grid: &ObstacleGrid, query: &Rect) -> Vec<usize> {
        let mut out = Vec::new();
        grid.for_each_index_near(query, |i| out.push(i));
        out
    }

    #[test]
    fn the_default_map_gets_cells_of_256_units_and_lists_every_overlap_in_order() {
        let map = Map::generate(MapParams {
            seed: 1,
            width: 4096.0,
            height: 4096.0,
            obstacles: 48,
        });
        let grid = ObstacleGrid::new(&map);
        assert_eq!((grid.cols, grid.rows), (16, 16));
        let mut rng = crate::rng::SplitMix64::new(3);
        for _ in 0..5_000 {
            let c = rng.square(-50.0, 4150.0);
            let query = Rect::around(c, rng.range_f32(0.5, 300.0));
            let got = near(&grid, &query);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?} not ascending");
            for (i, o) in map.obstacles.iter().enumerate() {
                if o.overlaps(&query) {
                    assert!(got.contains(&i), "obstacle {i} missing near {query:?}");
                }
            }
        }
    }

    #[test]
    fn odd_maps_fall_back_to_one_cell() {
        for (w, h) in [
            (0.0, 100.0),
            (f32::NAN, 100.0),
            (100.0, f32::INFINITY),
            (-5.0, -5.0),
        ] {
            let grid = ObstacleGrid::new(&Map::open(w, h));
            assert_eq!((grid.cols, grid.rows), (1, 1), "{w} x {h}");
        }
        let huge = ObstacleGrid::new(&Map::open(1e9, 1e9));
        assert_eq!((huge.cols, huge.rows), (64, 64));
        // Obstacles that each cover the whole grid would list every one in every cell.
        let mut map = Map::open(16384.0, 16384.0);
        let all = Rect::new(Vec2::splat(-1.0), Vec2::splat(20000.0));
        map.obstacles = vec![all; 300];
        let grid = ObstacleGrid::new(&map);
        assert!(grid.starts.is_empty());
        assert_eq!(
            near(&grid, &Rect::around(Vec2::splat(10.0), 1.0)).len(),
            300
        );
    }
}
