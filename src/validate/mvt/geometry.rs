//! A feature's command stream (MVT 2.1 section 4.3) checked against its geometry type: the
//! commands must parse (known ids, counts, every parameter present) and follow the grammar of
//! the type, and polygon rings must wind as section 4.3.4.4 defines exterior and interior rings.
//!
//! Counts come from the tile and may be as large as 2^29 - 1: nothing is allocated from a count
//! before the parameters it announces are known to be there.

const MOVE_TO: u32 = 1;
const LINE_TO: u32 = 2;
const CLOSE_PATH: u32 = 7;

/// What a feature's `type` asks its geometry to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `UNKNOWN`: the spec leaves its grammar open, so only the commands themselves are checked.
    Unknown,
    /// `POINT`
    Point,
    /// `LINESTRING`
    LineString,
    /// `POLYGON`
    Polygon,
}

/// The first thing wrong with a feature's geometry, as the end of a sentence naming the feature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryProblem {
    /// No command at all.
    #[error("the geometry is empty")]
    Empty,
    /// A command id MVT 2.1 does not define.
    #[error("unknown command id {id} at index {at}")]
    UnknownCommand {
        /// The id.
        id: u32,
        /// Where the command is in the stream.
        at: usize,
    },
    /// A MoveTo or LineTo whose parameters the stream ends before.
    #[error("{name} at index {at} announces {wanted} parameters but only {left} follow")]
    CutShort {
        /// `MoveTo` or `LineTo`.
        name: &'static str,
        /// Where the command is in the stream.
        at: usize,
        /// Parameters its count announces.
        wanted: usize,
        /// Integers left in the stream.
        left: usize,
    },
    /// A ClosePath whose count is not 1.
    #[error("{0} must have a count of 1")]
    ClosePathCount(Spot),
    /// A MoveTo or LineTo with no point.
    #[error("{0} has a count of 0")]
    ZeroCount(Spot),
    /// A point's geometry that is not a MoveTo.
    #[error("a point is one MoveTo, not {0}")]
    NotMoveTo(Spot),
    /// A point's geometry with more than its one MoveTo.
    #[error("a point is one MoveTo, but {0} follows it")]
    AfterPoint(Spot),
    /// A line or ring whose next command is not the one its grammar needs.
    #[error("{part} needs {needs}, found {found}")]
    Needs {
        /// The line or ring.
        part: Part,
        /// The command it needs, with its count: `MoveTo(1)`, `LineTo(>=2)`.
        needs: &'static str,
        /// The command found instead.
        found: Spot,
    },
    /// A line or ring the stream ends in.
    #[error("{part} ends without its {needs}")]
    EndsWithout {
        /// The line or ring.
        part: Part,
        /// The command it needs.
        needs: &'static str,
    },
    /// A LineTo with a segment of zero length.
    #[error("{line_to} repeats a vertex (point {point} of it is (0, 0) away)")]
    RepeatedVertex {
        /// The LineTo.
        line_to: Spot,
        /// The point, from 1.
        point: usize,
    },
    /// A ring whose last vertex is its first, so ClosePath draws a zero-length segment.
    #[error("{0} repeats its first vertex before ClosePath (a zero-length closing segment)")]
    ClosedTwice(Part),
    /// A ring with no area.
    #[error("{0} has zero area")]
    ZeroArea(Part),
    /// A first ring that is not an exterior ring.
    #[error(
        "{0} winds counter-clockwise (negative area): the first ring must be an exterior ring, \
         clockwise in tile coordinates with y down"
    )]
    CounterClockwise(Part),
}

/// A command as messages name it: "LineTo(3) at index 4".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    name: &'static str,
    count: u32,
    at: usize,
}

impl std::fmt::Display for Spot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({}) at index {}", self.name, self.count, self.at)
    }
}

/// A line or a ring of a feature, counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A line of a (multi)linestring.
    Line(usize),
    /// A ring of a (multi)polygon.
    Ring(usize),
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Line(n) => write!(f, "line {n}"),
            Part::Ring(n) => write!(f, "ring {n}"),
        }
    }
}

/// One command with its parameters, as found at `at` in the stream.
struct Command<'g> {
    id: u32,
    count: u32,
    params: &'g [u32],
    at: usize,
}

impl Command<'_> {
    fn name(&self) -> &'static str {
        match self.id {
            MOVE_TO => "MoveTo",
            LINE_TO => "LineTo",
            _ => "ClosePath",
        }
    }

    /// The `(dX, dY)` pairs of a MoveTo or LineTo.
    fn deltas(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.params
            .chunks_exact(2)
            .map(|pair| (zigzag(pair[0]), zigzag(pair[1])))
    }

    /// Where it is, for messages.
    fn spot(&self) -> Spot {
        Spot {
            name: self.name(),
            count: self.count,
            at: self.at,
        }
    }
}

fn zigzag(n: u32) -> i64 {
    i64::from(n >> 1) ^ -i64::from(n & 1)
}

/// Splits the stream into commands, or says where it stops making sense.
fn commands(geometry: &[u32]) -> Result<Vec<Command<'_>>, GeometryProblem> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(&integer) = geometry.get(at) {
        let (id, count) = (integer & 0x7, integer >> 3);
        let wanted = match id {
            MOVE_TO | LINE_TO => 2 * count as usize,
            CLOSE_PATH => 0,
            other => return Err(GeometryProblem::UnknownCommand { id: other, at }),
        };
        let params =
            geometry
                .get(at + 1..at + 1 + wanted)
                .ok_or_else(|| GeometryProblem::CutShort {
                    name: if id == MOVE_TO { "MoveTo" } else { "LineTo" },
                    at,
                    wanted,
                    left: geometry.len() - at - 1,
                })?;
        let command = Command {
            id,
            count,
            params,
            at,
        };
        if id == CLOSE_PATH && count != 1 {
            return Err(GeometryProblem::ClosePathCount(command.spot()));
        }
        if id != CLOSE_PATH && count == 0 {
            return Err(GeometryProblem::ZeroCount(command.spot()));
        }
        found.push(command);
        at += 1 + wanted;
    }
    Ok(found)
}

/// The first thing wrong with `geometry` as a `kind`, if anything.
pub fn check(kind: Kind, geometry: &[u32]) -> Result<(), GeometryProblem> {
    if geometry.is_empty() {
        return Err(GeometryProblem::Empty);
    }
    let commands = commands(geometry)?;
    match kind {
        Kind::Unknown => Ok(()),
        Kind::Point => point(&commands),
        Kind::LineString => lines(&commands),
        Kind::Polygon => rings(&commands),
    }
}

/// Section 4.3.4.2: a single MoveTo (its count may be any number of points).
fn point(commands: &[Command<'_>]) -> Result<(), GeometryProblem> {
    match commands {
        [only] if only.id == MOVE_TO => Ok(()),
        [only] => Err(GeometryProblem::NotMoveTo(only.spot())),
        [_, second, ..] => Err(GeometryProblem::AfterPoint(second.spot())),
        [] => Err(GeometryProblem::Empty),
    }
}

/// Checks that the command at `index` is `id` with a count `>= min_count` (exactly 1 for MoveTo).
fn expect<'c, 'g>(
    commands: &'c [Command<'g>],
    index: usize,
    id: u32,
    min_count: u32,
    part: Part,
) -> Result<&'c Command<'g>, GeometryProblem> {
    let needs = match id {
        MOVE_TO => "MoveTo(1)",
        LINE_TO if min_count > 1 => "LineTo(>=2)",
        LINE_TO => "LineTo(>=1)",
        _ => "ClosePath",
    };
    match commands.get(index) {
        Some(command) if command.id == id && (id != MOVE_TO || command.count == 1) => {
            if command.count < min_count {
                return Err(GeometryProblem::Needs {
                    part,
                    needs,
                    found: command.spot(),
                });
            }
            Ok(command)
        }
        Some(command) => Err(GeometryProblem::Needs {
            part,
            needs,
            found: command.spot(),
        }),
        None => Err(GeometryProblem::EndsWithout { part, needs }),
    }
}

/// Section 4.3.3.2: a LineTo segment may not have zero length.
fn no_zero_segment(line_to: &Command<'_>) -> Result<(), GeometryProblem> {
    match line_to.deltas().position(|delta| delta == (0, 0)) {
        Some(n) => Err(GeometryProblem::RepeatedVertex {
            line_to: line_to.spot(),
            point: n + 1,
        }),
        None => Ok(()),
    }
}

/// Section 4.3.4.3: repetitions of MoveTo(1) LineTo(>=1).
fn lines(commands: &[Command<'_>]) -> Result<(), GeometryProblem> {
    let mut index = 0;
    let mut line = 1;
    while index < commands.len() {
        let part = Part::Line(line);
        expect(commands, index, MOVE_TO, 1, part)?;
        no_zero_segment(expect(commands, index + 1, LINE_TO, 1, part)?)?;
        index += 2;
        line += 1;
    }
    Ok(())
}

/// Section 4.3.4.4: rings of MoveTo(1) LineTo(>=2) ClosePath; the first ring is an exterior ring
/// (positive area by the surveyor's formula in tile coordinates, so clockwise with y down), and
/// every later ring either starts a new polygon (positive) or is a hole in the last (negative).
fn rings(commands: &[Command<'_>]) -> Result<(), GeometryProblem> {
    let mut cursor = (0i64, 0i64);
    let mut index = 0;
    let mut ring = 1;
    while index < commands.len() {
        let part = Part::Ring(ring);
        let move_to = expect(commands, index, MOVE_TO, 1, part)?;
        let line_to = expect(commands, index + 1, LINE_TO, 2, part)?;
        expect(commands, index + 2, CLOSE_PATH, 1, part)?;
        no_zero_segment(line_to)?;
        let mut vertices = Vec::with_capacity(1 + line_to.count as usize);
        for (dx, dy) in move_to.deltas().chain(line_to.deltas()) {
            cursor = (cursor.0.wrapping_add(dx), cursor.1.wrapping_add(dy));
            vertices.push(cursor);
        }
        if vertices.first() == vertices.last() {
            return Err(GeometryProblem::ClosedTwice(part));
        }
        match doubled_area(&vertices) {
            0 => return Err(GeometryProblem::ZeroArea(part)),
            area if area < 0 && ring == 1 => return Err(GeometryProblem::CounterClockwise(part)),
            _ => {}
        }
        index += 3;
        ring += 1;
    }
    Ok(())
}

/// Twice the ring's signed area by the surveyor's formula, taken about the first vertex so the
/// products stay small; positive for a ring that is clockwise on screen (y down).
fn doubled_area(vertices: &[(i64, i64)]) -> i128 {
    let Some(&(x0, y0)) = vertices.first() else {
        return 0;
    };
    let relative = |&(x, y): &(i64, i64)| {
        (
            i128::from(x) - i128::from(x0),
            i128::from(y) - i128::from(y0),
        )
    };
    let mut sum: i128 = 0;
    for (a, b) in vertices.iter().zip(vertices.iter().cycle().skip(1)) {
        let ((ax, ay), (bx, by)) = (relative(a), relative(b));
        sum = sum.saturating_add(ax.saturating_mul(by).saturating_sub(bx.saturating_mul(ay)));
    }
    sum
}
