//! Opening a `sqlite` connection: the file, with the connection's `schemas` attached (each a
//! file beside it), so that `schema.table` names work as on PostgreSQL and BigQuery.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection as _;

/// Opens the database at `path` with `schemas` attached (made when missing, unless
/// `read_only`).
pub(crate) async fn open(
    path: &Path,
    schemas: &[String],
    read_only: bool,
) -> Result<sqlx::SqliteConnection, sqlx::Error> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .busy_timeout(Duration::from_secs(30));
    let mut db = sqlx::SqliteConnection::connect_with(&options).await?;
    for schema in schemas {
        let file = schema_file(path, schema);
        if !file.exists() {
            if read_only {
                continue;
            }
            // Attached files open with the main file's flags, which do not create.
            let create = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true);
            sqlx::SqliteConnection::connect_with(&create)
                .await?
                .close()
                .await?;
        }
        sqlx::query(&format!(
            "ATTACH DATABASE ?1 AS \"{}\"",
            schema.replace('"', "")
        ))
        .bind(file.to_string_lossy().to_string())
        .execute(&mut db)
        .await?;
    }
    Ok(db)
}

/// The file of schema `schema` of the database at `path`: `warehouse.sqlite` and `analytics`
/// give `warehouse.analytics.sqlite`.
pub(crate) fn schema_file(path: &Path, schema: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.{schema}.sqlite"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn schemas_live_beside_the_database() {
        assert_eq!(
            super::schema_file(
                std::path::Path::new(".ferry/dev/warehouse.sqlite"),
                "analytics"
            ),
            std::path::Path::new(".ferry/dev/warehouse.analytics.sqlite")
        );
    }

    #[test]
    fn attached_schemas_hold_tables() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("warehouse.sqlite");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                std::fs::write(&path, "").expect("file");
                let mut db = super::open(&path, &["analytics".to_string()], false)
                    .await
                    .expect("opens");
                sqlx::raw_sql("CREATE TABLE analytics.daily (n INTEGER); INSERT INTO analytics.daily VALUES (7)")
                    .execute(&mut db)
                    .await
                    .expect("a table in the schema");
            });
        assert!(dir.path().join("warehouse.analytics.sqlite").is_file());
    }
}
