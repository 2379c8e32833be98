//! Which rows make a tile's statement fail, so the error names the layer, its table and the rows'
//! ids rather than only the tile: a shape PostGIS cannot transform (a latitude past ±90, from a
//! buffer near a pole) fails every tile that holds it, and the operator must find it to fix it.
//!
//! Only the error path pays for this. Each layer the statement renders is checked whole (its rows
//! in the tile's fetch envelope, projected as the statement projects them); the rows of a layer that
//! fails are listed by id and bisected by id range until single ids fail alone. The search is
//! capped in statements and ids, and stops at the first failure of another kind.

use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::connections::Connections;
use super::is_transient;
use super::source::LayerSource;
use super::sql;

/// Most ids named per layer.
pub const MAX_NAMED: usize = 5;

/// Most statements one tile's search runs, the listing of ids included.
const MAX_STATEMENTS: usize = 64;

/// Most ids of one layer listed for the bisection; a tile holding more is bisected within these.
const MAX_LISTED: usize = 1_000_000;

/// Whether a tile statement's error comes from the data of some row rather than from the server
/// or the statement: PostGIS reports what it cannot do with a geometry (`transform: Invalid
/// coordinate`, GEOS errors) as an internal error, and PostgreSQL a value it cannot convert as a
/// data exception.
pub fn from_row_data(err: &tokio_postgres::Error) -> bool {
    err.code()
        .is_some_and(|code| *code == SqlState::INTERNAL_ERROR || code.code().starts_with("22"))
}

/// The rows of one layer found failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Culprit {
    /// The layer's name.
    pub layer: String,
    /// Its table, as configured (`schema.table`).
    pub table: String,
    /// Ids of rows that fail alone, as text, at most [`MAX_NAMED`].
    pub ids: Vec<String>,
    /// Whether other rows of the layer may fail too (more than [`MAX_NAMED`] found, or the search
    /// stopped at its cap).
    pub more: bool,
}

impl std::fmt::Display for Culprit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "layer `{}` (table `{}`): ", self.layer, self.table)?;
        let ids = self.ids.join(", ");
        match (self.ids.len(), self.more) {
            (0, _) => write!(f, "a row whose id the search did not isolate"),
            (1, false) => write!(f, "row id {ids}"),
            (_, false) => write!(f, "row ids {ids}"),
            (_, true) => write!(f, "row ids {ids} and maybe more"),
        }
    }
}

/// What a tile's failed statement is checked with: the tile's own parameters (`$1..$43` of a
/// one-tile statement).
pub struct Statement<'a> {
    /// `$1..$43` of the tile's one-tile statement.
    pub params: &'a [&'a (dyn ToSql + Sync)],
}

/// The rows of `layers` (the layers the statement renders at zoom `z`) that fail in the tile's
/// fetch envelope. Empty when none is found, or when the search itself cannot run.
pub async fn find(
    connections: &Connections,
    layers: &[&LayerSource],
    z: u8,
    statement: &Statement<'_>,
) -> Vec<Culprit> {
    let mut search = Search {
        connections,
        statement,
        statements: 0,
    };
    let mut culprits = Vec::new();
    for layer in layers {
        match search.layer(layer, z).await {
            Ok(Some(culprit)) => culprits.push(culprit),
            Ok(None) => {}
            Err(Stopped) => break,
        }
    }
    culprits
}

/// Where to cut sorted ids that are not all equal: near the middle, where the id changes, so rows
/// sharing an id stay on one side. Always within `1..ids.len()`.
fn split(ids: &[String]) -> usize {
    let half = ids.len() / 2;
    let up = (half..ids.len()).find(|&i| ids[i] != ids[i - 1]);
    let down = (1..=half).rev().find(|&i| ids[i] != ids[i - 1]);
    match (down, up) {
        (Some(down), Some(up)) if half - down <= up - half => down,
        (_, Some(up)) => up,
        (Some(down), None) => down,
        (None, None) => half.max(1),
    }
}

/// The search was stopped: its cap was reached, or a statement failed for another reason.
struct Stopped;

/// Whether a range of rows projects cleanly.
enum Outcome {
    Clean,
    Fails,
}

struct Search<'a> {
    connections: &'a Connections,
    statement: &'a Statement<'a>,
    statements: usize,
}

impl Search<'_> {
    /// The failing rows of one layer, when any.
    async fn layer(&mut self, layer: &LayerSource, z: u8) -> Result<Option<Culprit>, Stopped> {
        let clustered = layer.config.cluster_at(z).is_some();
        let check = sql::rows_between(layer, clustered, true);
        if let Outcome::Clean = self.check(&check, None, None).await? {
            return Ok(None);
        }
        let mut culprit = Culprit {
            layer: layer.config.name.clone(),
            table: match &layer.config.schema {
                Some(schema) => format!("{schema}.{}", layer.config.table),
                None => layer.config.table.clone(),
            },
            ids: Vec::new(),
            more: false,
        };
        let Ok(ids) = self.ids(layer, clustered).await else {
            culprit.more = true;
            return Ok(Some(culprit));
        };
        if ids.len() >= MAX_LISTED {
            culprit.more = true;
        }
        // Ranges of the sorted ids to search, and whether each is known to hold a failing row;
        // the lower ids on top, so they are named first.
        let mut ranges = vec![(0, ids.len(), true)];
        while let Some((start, end, known)) = ranges.pop() {
            if culprit.ids.len() >= MAX_NAMED {
                culprit.more = true;
                break;
            }
            if end <= start {
                continue;
            }
            let (first, last) = (&ids[start], &ids[end - 1]);
            let outcome = match known {
                true => Ok(Outcome::Fails),
                false => self.check(&check, Some(first), Some(last)).await,
            };
            match outcome {
                Ok(Outcome::Fails) => {}
                Ok(Outcome::Clean) => continue,
                Err(Stopped) => {
                    culprit.more = true;
                    break;
                }
            }
            if first == last {
                culprit.ids.push(first.clone());
                continue;
            }
            let middle = split(&ids[start..end]) + start;
            match self
                .check(&check, Some(first), Some(&ids[middle - 1]))
                .await
            {
                // Both halves may hold one.
                Ok(Outcome::Fails) => ranges.extend([(middle, end, false), (start, middle, true)]),
                Ok(Outcome::Clean) => ranges.push((middle, end, true)),
                Err(Stopped) => {
                    culprit.more = true;
                    break;
                }
            }
        }
        culprit.ids.sort();
        Ok(Some(culprit))
    }

    /// The ids of the layer's rows in the tile's envelope, as text in the search's order.
    async fn ids(&mut self, layer: &LayerSource, clustered: bool) -> Result<Vec<String>, Stopped> {
        let list = sql::rows_between(layer, clustered, false);
        let sql = format!("{} LIMIT {MAX_LISTED}", list.sql);
        let rows = self.run(&sql, &list, None, None).await?;
        let rows = rows.map_err(|_| Stopped)?;
        Ok(rows.iter().filter_map(|row| row.try_get(0).ok()).collect())
    }

    /// Whether the layer's rows with ids within `lower..=upper` project cleanly.
    async fn check(
        &mut self,
        check: &sql::TileQuery,
        lower: Option<&String>,
        upper: Option<&String>,
    ) -> Result<Outcome, Stopped> {
        match self.run(&check.sql, check, lower, upper).await? {
            Ok(_) => Ok(Outcome::Clean),
            Err(err) if from_row_data(&err) => Ok(Outcome::Fails),
            Err(err) => {
                tracing::debug!(
                    "looking for the rows that fail: {}",
                    crate::error::pg_message(&err)
                );
                Err(Stopped)
            }
        }
    }

    /// Runs one statement of the search (`sql`: `query`'s text or a variant with its parameters), unnamed (it runs once), on the least busy connection.
    /// The outer error stops the search: its cap, or a statement that may succeed if tried again.
    async fn run(
        &mut self,
        sql: &str,
        query: &sql::TileQuery,
        lower: Option<&String>,
        upper: Option<&String>,
    ) -> Result<Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>, Stopped> {
        if self.statements >= MAX_STATEMENTS {
            return Err(Stopped);
        }
        self.statements += 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = self.statement.params.to_vec();
        if let Some(value) = &query.partition_value {
            params.push(value);
        }
        params.push(&lower);
        params.push(&upper);
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
            .into_iter()
            .zip(query.types.iter().cloned())
            .collect();
        let (busy, _, client) = self.connections.pick();
        let outcome = client.query_typed(sql, &typed).await;
        drop(busy);
        match outcome {
            Err(err) if is_transient(&err) => Err(Stopped),
            outcome => Ok(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &[&str]) -> Vec<String> {
        text.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_split_keeps_rows_sharing_an_id_on_one_side() {
        assert_eq!(split(&ids(&["1", "2"])), 1);
        assert_eq!(split(&ids(&["1", "2", "3", "4"])), 2);
        assert_eq!(split(&ids(&["1", "2", "2", "2", "2", "3"])), 1);
        assert_eq!(split(&ids(&["1", "1", "1", "1", "1", "2"])), 5);
        assert_eq!(split(&ids(&["1", "2", "2", "2", "2", "2"])), 1);
    }

    #[test]
    fn a_culprit_names_its_layer_table_and_rows() {
        let mut culprit = Culprit {
            layer: "shapes".into(),
            table: "geo.shapes".into(),
            ids: ids(&["9001"]),
            more: false,
        };
        assert_eq!(
            culprit.to_string(),
            "layer `shapes` (table `geo.shapes`): row id 9001"
        );
        culprit.ids = ids(&["1", "2"]);
        culprit.more = true;
        assert_eq!(
            culprit.to_string(),
            "layer `shapes` (table `geo.shapes`): row ids 1, 2 and maybe more"
        );
    }
}
