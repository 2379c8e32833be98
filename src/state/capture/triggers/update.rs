//! A table's UPDATE trigger: old and new rows paired on the id, the pairs whose watched columns
//! changed logged, and those that changed their geometry alone logged as moved.

use super::{
    dispatch, logged_geometry, partition_column, single_row_partitions, value_sql, values_object,
    Watched,
};
use crate::db::quote_ident;

/// A watched non-geometry column `column` of the row `row` as the triggers compare it.
fn compared(watched: &Watched, row: &str, column: &str) -> String {
    if watched.text_compared.iter().any(|c| c == column) {
        format!("{row}.{}::text", quote_ident(column))
    } else {
        format!("{row}.{}", quote_ident(column))
    }
}

/// The watched columns of the rows `old` and `new` differ (any column when a layer filters the
/// table, since a filter may use any column to move a row in or out of a layer).
fn changed(watched: &Watched, old: &str, new: &str) -> String {
    if watched.filtered {
        return format!("ROW({old}.*) IS DISTINCT FROM ROW({new}.*)");
    }
    let side = |t: &str| {
        let columns: Vec<String> = watched
            .columns
            .iter()
            .map(|c| match c == &watched.geometry {
                true => format!("{t}.{}", logged_geometry(watched)),
                false => compared(watched, t, c),
            })
            .collect();
        format!("({})", columns.join(", "))
    };
    format!("{} IS DISTINCT FROM {}", side(old), side(new))
}

/// Whether the rows `old` and `new` agree on every watched column but the geometry: an UPDATE
/// of such a pair changed the geometry alone, and is logged as moved, so that a reseed can render
/// only where the drawn shapes differ (points are read as any change). Never on a filtered table
/// (`false`), whose filter may read the geometry or any other column. No PostGIS function is
/// called: the application's own search path may not reach PostGIS, and its writes must never
/// fail here. Never NULL.
fn same_but_geometry(watched: &Watched, old: &str, new: &str) -> String {
    if watched.filtered {
        return "false".into();
    }
    let side = |t: &str| {
        let columns: Vec<String> = watched
            .columns
            .iter()
            .filter(|c| *c != &watched.geometry)
            .map(|c| compared(watched, t, c))
            .collect();
        format!("ROW({})", columns.join(", "))
    };
    format!("{} IS NOT DISTINCT FROM {}", side(old), side(new))
}

/// Whether the paired rows `old` and `new` changed their geometry alone, both present (see
/// [`same_but_geometry`]).
fn geometry_only(watched: &Watched, old: &str, new: &str) -> String {
    let geometry = logged_geometry(watched);
    format!(
        "({} AND {old}.{geometry} IS NOT NULL AND {new}.{geometry} IS NOT NULL)",
        same_but_geometry(watched, old, new)
    )
}

/// The body of a table's UPDATE trigger: the old and new positions of the rows whose watched
/// columns changed and, for partitioned tables, the partition values those rows left and joined;
/// it runs `notify` when it logged.
///
/// Old and new rows are paired on the id column: a row whose id changed, or an id that is not
/// unique, pairs with nothing or with more than its own version, which logs more positions than
/// needed but never fewer. Text ids are paired by their bytes (`COLLATE "C"`): sorting them by a
/// linguistic collation for the merge join cost more than the rest of the pairing. The watched
/// columns are compared one by one rather than as `ROW(...)` values built in subqueries, which
/// cost more to set up on every statement.
pub(super) fn update_body(schema: &str, watched: &Watched, notify: &str) -> String {
    let geometry = logged_geometry(watched);
    let id = quote_ident(&watched.id);
    let collate = if watched.id_collatable {
        " COLLATE \"C\""
    } else {
        ""
    };
    // The pairs whose watched columns changed, each with its old and new geometry (`og`, `ng`)
    // and whether its other watched columns stayed (`same`), decided once per pair: `OFFSET 0`
    // keeps the subquery from being pulled up into every use of `same`.
    let join = format!("oar_old o FULL JOIN oar_new n ON o.{id}{collate} = n.{id}{collate}");
    let only_changed = if watched.filtered {
        format!(" WHERE {}", changed(watched, "o", "n"))
    } else {
        String::new()
    };
    let pairs = |carried: &str| {
        format!(
            "(SELECT o.{geometry} AS og, n.{geometry} AS ng, {} AS same{carried}
                           FROM {join}{only_changed} OFFSET 0) d
                     WHERE NOT d.same OR d.og IS DISTINCT FROM d.ng",
            same_but_geometry(watched, "o", "n")
        )
    };
    let moved_pair = "(d.same AND d.og IS NOT NULL AND d.ng IS NOT NULL)";
    let single = single_row(schema, watched, notify);
    // Both arrays of moved pairs are aggregated in one pass over the same rows, under the same
    // filter, so their elements stay paired.
    let logged_arrays = |old: &str, new: &str, moved: &str| {
        format!(
            "array_agg({old}) FILTER (WHERE {old} IS NOT NULL AND NOT {moved}),
                            array_agg({new}) FILTER (WHERE {new} IS NOT NULL AND NOT {moved}),
                            array_agg({old}) FILTER (WHERE {moved}),
                            array_agg({new}) FILTER (WHERE {moved})"
        )
    };
    if watched.partitions.is_empty() {
        let bulk = format!(
            "                     INSERT INTO {schema}.change_log (source, old_geoms, new_geoms, moved_from, moved_to)
                     SELECT $1, {}
                     FROM {}
                     HAVING count(*) > 0",
            logged_arrays("d.og", "d.ng", moved_pair),
            pairs("")
        );
        return dispatch(&["oar_old", "oar_new"], &single, &bulk, notify);
    }
    let carried: String = watched
        .partitions
        .iter()
        .enumerate()
        .map(|(i, (column, _))| {
            let column = quote_ident(column);
            format!(", o.{column} AS op{i}, n.{column} AS np{i}")
        })
        .collect();
    let objects: Vec<String> = watched
        .partitions
        .iter()
        .enumerate()
        .map(|(i, (column, array))| {
            let values = format!(
                "{} UNION ALL SELECT {}",
                value_sql(&format!("d.op{i}"), *array),
                value_sql(&format!("d.np{i}"), *array),
            );
            values_object(column, "d", &values)
        })
        .collect();
    let bulk = format!(
        "                     WITH d AS MATERIALIZED (SELECT d.* FROM {})
                     INSERT INTO {schema}.change_log (source, old_geoms, new_geoms, moved_from, moved_to, partitions)
                     SELECT $1, {}, {}
                     FROM d HAVING count(*) > 0",
        pairs(&carried),
        logged_arrays("d.og", "d.ng", moved_pair),
        objects.join(" || ")
    );
    dispatch(&["oar_old", "oar_new"], &single, &bulk, notify)
}

/// The UPDATE trigger's statement for one row: its old and new version, whatever its id, are
/// compared directly (a changed id is a changed watched column), and logged as moved when only
/// its geometry changed; it runs `notify` when it logged.
fn single_row(schema: &str, watched: &Watched, notify: &str) -> String {
    let geometry = logged_geometry(watched);
    let partition_column = partition_column(watched);
    let single_partitions = single_row_partitions(watched, |column, array| {
        format!(
            "{} UNION ALL SELECT {}",
            value_sql(&format!("o.{column}"), array),
            value_sql(&format!("n.{column}"), array)
        )
    });
    let moved = geometry_only(watched, "o", "n");
    format!(
        "                         IF {} THEN
                             IF {moved} THEN
                                 INSERT INTO {schema}.change_log (source, moved_from, moved_to{partition_column})
                                 VALUES (TG_RELID, ARRAY[o.{geometry}], ARRAY[n.{geometry}]{single_partitions});
                             ELSE
                                 INSERT INTO {schema}.change_log (source, old_geom, new_geom{partition_column})
                                 VALUES (TG_RELID, o.{geometry}, n.{geometry}{single_partitions});
                             END IF;
                             {notify};
                         END IF",
        if watched.filtered {
            "o IS DISTINCT FROM n".to_string()
        } else {
            changed(watched, "o", "n")
        },
    )
}
