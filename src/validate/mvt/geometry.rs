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

    /// "LineTo(3) at 4", for messages.
    fn describe(&self) -> String {
        format!("{}({}) at index {}", self.name(), self.count, self.at)
    }
}

fn zigzag(n: u32) -> i64 {
    i64::from(n >> 1) ^ -i64::from(n & 1)
}

/// Splits the stream into commands, or says where it stops making sense.
fn commands(geometry: &[u32]) -> Result<Vec<Command<'_>>, String> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(&integer) = geometry.get(at) {
        let (id, count) = (integer & 0x7, integer >> 3);
        let wanted = match id {
            MOVE_TO | LINE_TO => 2 * count as usize,
            CLOSE_PATH => 0,
            other => return Err(format!("unknown command id {other} at index {at}")),
        };
        let params = geometry.get(at + 1..at + 1 + wanted).ok_or_else(|| {
            format!(
                "{} at index {at} announces {wanted} parameters but only {} follow",
                if id == MOVE_TO { "MoveTo" } else { "LineTo" },
                geometry.len() - at - 1
            )
        })?;
        let command = Command {
            id,
            count,
            params,
            at,
        };
        if id == CLOSE_PATH && count != 1 {
            return Err(format!("{} must have a count of 1", command.describe()));
        }
        if id != CLOSE_PATH && count == 0 {
            return Err(format!("{} has a count of 0", command.describe()));
        }
        found.push(command);
        at += 1 + wanted;
    }
    Ok(found)
}

/// The first thing wrong with `geometry` as a `kind`, if anything.
pub fn check(kind: Kind, geometry: &[u32]) -> Result<(), String> {
    if geometry.is_empty() {
        return Err("the geometry is empty".to_string());
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
fn point(commands: &[Command<'_>]) -> Result<(), String> {
    match commands {
        [only] if only.id == MOVE_TO => Ok(()),
        [only] => Err(format!("a point is one MoveTo, not {}", only.describe())),
        [_, second, ..] => Err(format!(
            "a point is one MoveTo, but {} follows it",
            second.describe()
        )),
        [] => Err("the geometry is empty".to_string()),
    }
}

/// Checks that the command at `index` is `id` with a count `>= min_count` (exactly 1 for MoveTo).
fn expect<'c, 'g>(
    commands: &'c [Command<'g>],
    index: usize,
    id: u32,
    min_count: u32,
    what: &str,
) -> Result<&'c Command<'g>, String> {
    let name = match id {
        MOVE_TO => "MoveTo(1)",
        LINE_TO if min_count > 1 => "LineTo(>=2)",
        LINE_TO => "LineTo(>=1)",
        _ => "ClosePath",
    };
    match commands.get(index) {
        Some(command) if command.id == id && (id != MOVE_TO || command.count == 1) => {
            if command.count < min_count {
                return Err(format!("{what} needs {name}, found {}", command.describe()));
            }
            Ok(command)
        }
        Some(command) => Err(format!("{what} needs {name}, found {}", command.describe())),
        None => Err(format!("{what} ends without its {name}")),
    }
}

/// Section 4.3.3.2: a LineTo segment may not have zero length.
fn no_zero_segment(line_to: &Command<'_>) -> Result<(), String> {
    match line_to.deltas().position(|delta| delta == (0, 0)) {
        Some(n) => Err(format!(
            "{} repeats a vertex (point {} of it is (0, 0) away)",
            line_to.describe(),
            n + 1
        )),
        None => Ok(()),
    }
}

/// Section 4.3.4.3: repetitions of MoveTo(1) LineTo(>=1).
fn lines(commands: &[Command<'_>]) -> Result<(), String> {
    let mut index = 0;
    let mut line = 1;
    while index < commands.len() {
        let what = format!("line {line}");
        expect(commands, index, MOVE_TO, 1, &what)?;
        no_zero_segment(expect(commands, index + 1, LINE_TO, 1, &what)?)?;
        index += 2;
        line += 1;
    }
    Ok(())
}

/// Section 4.3.4.4: rings of MoveTo(1) LineTo(>=2) ClosePath; the first ring is an exterior ring
/// (positive area by the surveyor's formula in tile coordinates, so clockwise with y down), and
/// every later ring either starts a new polygon (positive) or is a hole in the last (negative).
fn rings(commands: &[Command<'_>]) -> Result<(), String> {
    let mut cursor = (0i64, 0i64);
    let mut index = 0;
    let mut ring = 1;
    while index < commands.len() {
        let what = format!("ring {ring}");
        let move_to = expect(commands, index, MOVE_TO, 1, &what)?;
        let line_to = expect(commands, index + 1, LINE_TO, 2, &what)?;
        expect(commands, index + 2, CLOSE_PATH, 1, &what)?;
        no_zero_segment(line_to)?;
        let mut vertices = Vec::with_capacity(1 + line_to.count as usize);
        for (dx, dy) in move_to.deltas().chain(line_to.deltas()) {
            cursor = (cursor.0.wrapping_add(dx), cursor.1.wrapping_add(dy));
            vertices.push(cursor);
        }
        if vertices.first() == vertices.last() {
            return Err(format!(
                "{what} repeats its first vertex before ClosePath (a zero-length closing segment)"
            ));
        }
        match doubled_area(&vertices) {
            0 => return Err(format!("{what} has zero area")),
            area if area < 0 && ring == 1 => {
                return Err(format!(
                    "{what} winds counter-clockwise (negative area): the first ring must be an \
                     exterior ring, clockwise in tile coordinates with y down"
                ))
            }
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
