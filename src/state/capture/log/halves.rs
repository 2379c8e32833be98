//! A change log read that PostGIS refused, read again in halves down to the geometries it cannot
//! project.

use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use super::{corners, projected, projected_sql, refused_or_rows, source_box, Geometries};
use crate::error::{DbError, Result};
use crate::plan::ChangedBox;

/// The changes of [`super::changed_boxes`] read in halves, each under a savepoint, down to the single
/// geometries PostGIS cannot project, which dirty every tile that may fetch them
/// ([`ChangedBox::unprojected`]): one such geometry among a bulk statement's 100,000 costs about
/// 2 × log2(100,000) reads, not one per geometry.
pub(super) async fn in_halves(
    client: &impl GenericClient,
    geometries: &Geometries,
    params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type); 4],
) -> Result<(bool, Vec<ChangedBox>)> {
    let during = || DbError::during("reading the change log");
    let listed = client
        .query_typed(
            &format!(
                "SELECT c.everything, ST_SRID(v.g), ST_XMin(v.g), ST_YMin(v.g), ST_XMax(v.g), \
                 ST_YMax(v.g), c.id, v.k {} {} ORDER BY c.id, v.k",
                geometries.from, geometries.filter
            ),
            params,
        )
        .await
        .map_err(during())?;
    let everything = listed.iter().any(|row| row.get::<_, bool>(0));
    let listed: Vec<&Row> = listed.iter().filter(|row| !row.get::<_, bool>(0)).collect();
    let chosen = projected_sql(
        geometries,
        " AND (c.id, v.k) IN (SELECT * FROM unnest($5::int8[], $6::int8[]))",
    );
    let mut boxes = Vec::with_capacity(listed.len());
    let mut pending = vec![listed.as_slice()];
    while let Some(part) = pending.pop() {
        if part.is_empty() {
            continue;
        }
        let ids: Vec<i64> = part.iter().map(|row| row.get(6)).collect();
        let ks: Vec<i64> = part.iter().map(|row| row.get(7)).collect();
        let mut with_part: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> =
            params.to_vec();
        with_part.push((&ids, Type::INT8_ARRAY));
        with_part.push((&ks, Type::INT8_ARRAY));
        match refused_or_rows(client, &chosen, &with_part, "reading the change log").await? {
            Ok(rows) => boxes.extend(
                rows.iter()
                    .filter_map(projected)
                    .map(|(changed, _)| changed),
            ),
            Err(_) => match part {
                // An empty geometry has no box, and draws nothing.
                [only] => {
                    if corners(only, 2).is_some() {
                        boxes.push(ChangedBox::unprojected(source_box(only)));
                    }
                }
                _ => {
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            },
        }
    }
    Ok((everything, boxes))
}
