//! The statements that write a SELECT's rows into a table by a write mode, for each SQL
//! dialect ferry writes to. The rows are computed once into a temporary table; the table is
//! created from their columns if it does not exist; then the write itself (a DELETE and an
//! INSERT) runs in one transaction, so a failure leaves the table as it was.

use ferry_executor::connector::{TableWrite, WriteMode};

/// A SQL dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
    /// BigQuery's GoogleSQL.
    Bigquery,
}

/// The statements of a write, in order. The ones to run in one transaction are those from
/// [`Statements::transaction`] on (the creation of the table before them is DDL, which MySQL
/// commits and BigQuery does not allow in a transaction).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Statements {
    /// Compute the rows, create the table if needed.
    pub prepare: Vec<String>,
    /// Delete what is replaced (if anything), then insert.
    pub transaction: Vec<String>,
    /// Drop the temporary table.
    pub cleanup: Vec<String>,
}

/// The statements that write the rows of `select` into `write.table` through the temporary
/// table `ferry_rows_<suffix>`, or why they cannot be made (a table name or partition value
/// that is not safe to write into SQL).
pub(crate) fn statements(
    dialect: Dialect,
    select: &str,
    write: &TableWrite,
    suffix: &str,
) -> Result<Statements, String> {
    let rows = rows_table(suffix);
    let select = select.trim().trim_end_matches(';');
    let temporary = match dialect {
        Dialect::Bigquery => "TEMP",
        _ => "TEMPORARY",
    };
    let mut sql = from_rows(dialect, write, &rows, None)?;
    sql.prepare.insert(
        0,
        format!(
            "CREATE {temporary} TABLE {} AS {select}",
            quote(dialect, &rows)
        ),
    );
    Ok(sql)
}

/// The temporary table of a write's rows.
pub(crate) fn rows_table(suffix: &str) -> String {
    format!("ferry_rows_{suffix}")
}

/// The statements that write the rows of table `rows` (already filled, named by ferry) into `write.table`:
/// the table created from the rows' columns if missing, then the write in one transaction,
/// then `rows` dropped. With `columns`, the rows are inserted by column name (else in the
/// order of the table's columns).
pub(crate) fn from_rows(
    dialect: Dialect,
    write: &TableWrite,
    rows: &str,
    columns: Option<&[String]>,
) -> Result<Statements, String> {
    let table = write.table.as_str();
    if !is_table_name(table) {
        return Err(format!(
            "`{table}` is not a table name (letters, digits, `_` and `-`, dotted parts)"
        ));
    }
    let q = |name: &str| quote(dialect, name);
    let table = q(table);
    let rows = q(rows);
    let prepare = vec![format!(
        "CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM {rows} WHERE 1 = 0"
    )];
    let insert = match columns {
        None => format!("INSERT INTO {table} SELECT * FROM {rows}"),
        Some(columns) => {
            let listed = columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
            format!("INSERT INTO {table} ({listed}) SELECT {listed} FROM {rows}")
        }
    };
    let transaction = match &write.mode {
        WriteMode::Append => vec![insert],
        WriteMode::Replace => vec![format!("DELETE FROM {table} WHERE 1 = 1"), insert],
        WriteMode::ReplacePartition { column, value } => {
            if !is_column(column) {
                return Err(format!("`{column}` is not a column name"));
            }
            if !is_safe_value(value) {
                return Err(format!(
                    "partition value `{value}` holds characters other than letters, digits and ` :_.+-/`"
                ));
            }
            vec![
                format!("DELETE FROM {table} WHERE {} = '{value}'", q(column)),
                insert,
            ]
        }
        WriteMode::Merge { key } => {
            if let Some(bad) = key.iter().find(|k| !is_column(k)) {
                return Err(format!("`{bad}` is not a column name"));
            }
            let delete = match dialect {
                // No tuples in BigQuery: a correlated EXISTS on an aliased target.
                Dialect::Bigquery => format!(
                    "DELETE FROM {table} AS target WHERE EXISTS (SELECT 1 FROM {rows} AS source WHERE {})",
                    key.iter()
                        .map(|k| format!("source.{k} = target.{k}", k = q(k)))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                ),
                // MariaDB has no alias in a one-table DELETE: a row value IN works everywhere
                // else.
                _ => format!(
                    "DELETE FROM {table} WHERE ({columns}) IN (SELECT {columns} FROM {rows})",
                    columns = key.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ")
                ),
            };
            vec![delete, insert]
        }
    };
    Ok(Statements {
        prepare,
        transaction,
        cleanup: vec![format!("DROP TABLE {rows}")],
    })
}

/// Whether a partition value can be written into SQL as a string: letters, digits and
/// ` :_.+-/` only.
pub(crate) fn is_safe_value(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " :_.+-/".contains(c))
}

/// A name quoted for `dialect`, each dotted part apart (names are checked first: they hold
/// no quote characters). Quoted names keep their case.
pub(crate) fn quote(dialect: Dialect, name: &str) -> String {
    let mark = match dialect {
        Dialect::Bigquery | Dialect::Mysql => '`',
        Dialect::Postgres | Dialect::Sqlite => '"',
    };
    name.split('.')
        .map(|part| format!("{mark}{part}{mark}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// A table name: dotted parts of letters, digits, `_` and `-` (BigQuery project ids).
pub(crate) fn is_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// A column name.
fn is_column(name: &str) -> bool {
    !name.contains('-') && !name.contains('.') && is_table_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(mode: WriteMode) -> TableWrite {
        TableWrite {
            table: "analytics.daily".to_string(),
            mode,
        }
    }

    #[test]
    fn merge_deletes_by_key_then_inserts() {
        let merge = write(WriteMode::Merge {
            key: vec!["id".to_string(), "day".to_string()],
        });
        let sql = statements(Dialect::Postgres, "SELECT 1 AS id;", &merge, "x").expect("valid");
        assert_eq!(
            sql.prepare[0],
            "CREATE TEMPORARY TABLE \"ferry_rows_x\" AS SELECT 1 AS id"
        );
        assert_eq!(
            sql.transaction,
            [
                r#"DELETE FROM "analytics"."daily" WHERE ("id", "day") IN (SELECT "id", "day" FROM "ferry_rows_x")"#,
                r#"INSERT INTO "analytics"."daily" SELECT * FROM "ferry_rows_x""#
            ]
        );
        let bq = statements(Dialect::Bigquery, "SELECT 1 AS id", &merge, "x").expect("valid");
        assert!(bq.prepare[0].starts_with("CREATE TEMP TABLE"));
        assert!(
            bq.transaction[0].contains("source.`id` = target.`id` AND source.`day` = target.`day`")
        );
    }

    #[test]
    fn unsafe_names_and_values_are_refused() {
        let partition = write(WriteMode::ReplacePartition {
            column: "day".to_string(),
            value: "2026-11-28'; DROP TABLE x; --".to_string(),
        });
        assert!(statements(Dialect::Sqlite, "SELECT 1", &partition, "x").is_err());
        let table = TableWrite {
            table: "daily; DROP TABLE x".to_string(),
            mode: WriteMode::Append,
        };
        assert!(statements(Dialect::Sqlite, "SELECT 1", &table, "x").is_err());
        let fine = write(WriteMode::ReplacePartition {
            column: "day".to_string(),
            value: "2026-11-28".to_string(),
        });
        let sql = statements(Dialect::Mysql, "SELECT 1", &fine, "x").expect("valid");
        assert_eq!(
            sql.transaction[0],
            "DELETE FROM `analytics`.`daily` WHERE `day` = '2026-11-28'"
        );
    }
}
