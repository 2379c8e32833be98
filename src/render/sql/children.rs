//! The children flags of a statement: per child envelope, whether any layer of deeper zooms has
//! rows there, read from wherever the statement already holds the layer's rows.

use super::{
    active_below, drawn_whole_below, envelope_params, exists, other_kinds_in, ENVELOPES, MERC,
};
use crate::render::source::LayerSource;
use crate::tile::ZoomRange;

/// Where a layer's rows for the child flags come from in a statement.
#[derive(Clone, Copy)]
pub(super) enum RowsAt<'a> {
    /// Not fetched at this zoom: ask the table.
    Table,
    /// Held in a CTE of that name.
    Cte(&'a str),
    /// Summed into the cells of a CTE of that name, whose extents bound their members.
    Cells(&'a str),
    /// Already reduced to flags `c1`..`c4` by the lateral subquery of that alias.
    Flags(&'a str),
}

/// `ARRAY[...]` saying, per child, whether any layer of deeper zooms has rows there.
pub(super) fn children_array<'a>(
    layers: &[LayerSource],
    z: u8,
    job: ZoomRange,
    rows_of: impl Fn(usize) -> RowsAt<'a>,
) -> String {
    let deeper: Vec<(usize, &LayerSource)> = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| active_below(l, z, job))
        .collect();
    let flags: Vec<String> = (1..ENVELOPES)
        .map(|child| {
            if deeper.is_empty() {
                return "false".to_string();
            }
            let tests: Vec<String> = deeper
                .iter()
                .map(|(index, layer)| {
                    let rows = rows_of(*index);
                    let points_stand_in = matches!(rows, RowsAt::Cte(_) | RowsAt::Cells(_))
                        && !layer.points_only
                        && drawn_whole_below(layer, z, job);
                    let test = rows_test(layer, rows, child);
                    if points_stand_in {
                        format!("{test} OR {}", other_kinds_in(layer, child))
                    } else {
                        test
                    }
                })
                .collect();
            tests.join(" OR ")
        })
        .collect();
    format!("ARRAY[{}]", flags.join(", "))
}

/// Whether rows of `layer`, found where `rows` says, lie in child envelope `child`.
pub(super) fn rows_test(layer: &LayerSource, rows: RowsAt, child: usize) -> String {
    match rows {
                    RowsAt::Flags(alias) => format!("coalesce({alias}.c{child}, false)"),
                    RowsAt::Cte(cte) => format!(
                        "EXISTS (SELECT 1 FROM {cte} WHERE {cte}.{MERC} && ST_MakeEnvelope({}, 3857))",
                        envelope_params(child, true)
                    ),
                    // `&&` compares single-precision boxes rounded outwards, as the child's own
                    // index condition does; an exact comparison of the extents would miss rows a
                    // metre outside the envelope that the child's query still finds.
                    RowsAt::Cells(cells) => format!(
                        "EXISTS (SELECT 1 FROM {cells} WHERE ST_MakeEnvelope({cells}.__oar_x0, {cells}.__oar_y0, \
                         {cells}.__oar_x1, {cells}.__oar_y1, 3857) && env.child{child})"
                    ),
                    RowsAt::Table => exists(layer, child),
    }
}
