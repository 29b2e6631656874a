//! The SQL of a sync, per dialect. Three tables meet: the target `t` (the application's), the
//! stage `s` (a temporary table of the source's rows in the target's column types, with each
//! row's hash and number), and the state `h` (ferry's: each synced key and the hash of the
//! values it was last written with). Names are checked before they get here.

use crate::write::{Dialect, quote};

/// A PostgreSQL stage of at most this many rows is joined without analysing it first.
const SMALL_STAGE: i64 = 50_000;
/// The table of fencing numbers, one row per sync and run.
pub(crate) const FENCES: &str = "ferry_sync_fences";
/// The stage: a temporary table of the connection.
const STAGE: &str = "ferry_stage";
/// The table of rows the target refused.
pub(crate) const REJECTS: &str = "ferry_sync_rejects";

/// The names a sync's statements use.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The target database's dialect.
    pub dialect: Dialect,
    /// The target table, quoted.
    target: String,
    /// The stage, quoted.
    stage: String,
    /// The state table, quoted.
    state: String,
    /// The rejects table, quoted.
    rejects: String,
    /// Every column, raw.
    columns: Vec<String>,
    /// The key columns, raw.
    key: Vec<String>,
    /// The scope: column, value.
    scope: Vec<(String, String)>,
    /// Whether the state has its unique index on the key (MySQL cannot index a TEXT key
    /// without a length, and keeps such a state without one).
    state_unique: bool,
}

impl Sql {
    /// The statements of a sync into `target`, with its state in `state`
    /// and its rejects in `rejects`.
    pub(crate) fn new(
        dialect: Dialect,
        target: &str,
        state: &str,
        rejects: &str,
        columns: &[String],
        key: &[String],
        scope: &[(String, String)],
    ) -> Self {
        Self {
            dialect,
            target: quote(dialect, target),
            stage: quote(dialect, STAGE),
            state: quote(dialect, state),
            rejects: quote(dialect, rejects),
            columns: columns.to_vec(),
            key: key.to_vec(),
            scope: scope.to_vec(),
            state_unique: true,
        }
    }

    /// Records that the state has no unique index on the key.
    pub(crate) fn state_without_unique_key(&mut self) {
        self.state_unique = false;
    }

    fn q(&self, name: &str) -> String {
        quote(self.dialect, name)
    }

    /// `a.c1, a.c2` for `names`.
    fn list(&self, alias: &str, names: &[String]) -> String {
        names
            .iter()
            .map(|c| format!("{alias}.{}", self.q(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `a.k1 = b.k1 AND a.k2 = b.k2`.
    fn same_key(&self, a: &str, b: &str) -> String {
        self.key
            .iter()
            .map(|k| format!("{a}.{k} = {b}.{k}", k = self.q(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The non-key columns.
    fn values(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| !self.key.contains(c))
            .cloned()
            .collect()
    }

    /// `t.scope1 = 'v1' AND ...`, or `1 = 1` without a scope.
    fn in_scope(&self, alias: &str) -> String {
        if self.scope.is_empty() {
            return "1 = 1".to_string();
        }
        self.scope
            .iter()
            .map(|(column, value)| {
                format!(
                    "{alias}.{} = {}",
                    self.q(column),
                    literal(self.dialect, value)
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The key of stage row `s` as text: `k1=v1, k2=v2`.
    fn key_text(&self) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let label = if i == 0 {
                    format!("{k}=")
                } else {
                    format!(", {k}=")
                };
                format!("{}, s.{}", literal(self.dialect, &label), self.q(k))
            })
            .collect();
        match self.dialect {
            Dialect::Sqlite => parts
                .iter()
                .map(|p| p.replacen(", s.", " || s.", 1))
                .collect::<Vec<_>>()
                .join(" || "),
            _ => format!("CONCAT({})", parts.join(", ")),
        }
    }

    /// What names a stage row `s` for people: its key, or its number without a key.
    fn row_label(&self) -> String {
        match (self.key.is_empty(), self.dialect) {
            (false, _) => self.key_text(),
            (true, Dialect::Sqlite) => "'row ' || s.ferry_row".to_string(),
            (true, _) => "CONCAT('row ', s.ferry_row)".to_string(),
        }
    }

    /// A 64-bit integer type, for `CAST`.
    fn bigint(&self) -> &'static str {
        match self.dialect {
            Dialect::Mysql => "SIGNED",
            Dialect::Sqlite => "INTEGER",
            _ => "BIGINT",
        }
    }

    /// Fails when the target table or one of the columns is missing.
    pub(crate) fn probe_target(&self) -> String {
        format!(
            "SELECT {} FROM {} WHERE 1 = 0",
            self.list_plain(&self.columns),
            self.target
        )
    }

    fn list_plain(&self, names: &[String]) -> String {
        names
            .iter()
            .map(|c| self.q(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Creates the stage with the target's column types, a hash and a row number.
    pub(crate) fn create_stage(&self) -> String {
        if self.dialect == Dialect::Mysql {
            // `CAST(0 AS SIGNED)` would make a one-digit column: MySQL takes declared columns
            // before the selected ones.
            return format!(
                "CREATE TEMPORARY TABLE {} (ferry_hash BIGINT, ferry_row BIGINT) SELECT {} FROM {} WHERE 1 = 0",
                self.stage,
                self.list_plain(&self.columns),
                self.target
            );
        }
        format!(
            "CREATE TEMPORARY TABLE {} AS SELECT {}, CAST(0 AS {int}) AS ferry_hash, CAST(0 AS {int}) AS ferry_row FROM {} WHERE 1 = 0",
            self.stage,
            self.list_plain(&self.columns),
            self.target,
            int = self.bigint()
        )
    }

    /// The stage's columns in the order rows are staged.
    pub(crate) fn stage_columns(&self) -> (String, String) {
        let mut listed = self.list_plain(&self.columns);
        listed.push_str(", ferry_hash, ferry_row");
        (self.stage.clone(), listed)
    }

    /// `COPY stage (...) FROM STDIN` (PostgreSQL).
    pub(crate) fn copy_stage(&self) -> String {
        let (stage, columns) = self.stage_columns();
        format!("COPY {stage} ({columns}) FROM STDIN")
    }

    /// Prepares the stage of `staged` rows for the joins, after it is filled: PostgreSQL only
    /// needs statistics of a large one (to join it by hashing; a small one, which it joins
    /// through the target's index, is estimated well enough from its size); the others look
    /// rows up by key and by number.
    pub(crate) fn index_stage(&self, staged: i64) -> Vec<String> {
        if self.dialect == Dialect::Postgres {
            return if staged > SMALL_STAGE {
                vec![format!("ANALYZE {}", self.stage)]
            } else {
                Vec::new()
            };
        }
        let mut statements = Vec::new();
        if !self.key.is_empty() {
            statements.push(format!(
                "CREATE INDEX ferry_stage_key ON {} ({})",
                self.stage,
                self.list_plain(&self.key)
            ));
        }
        statements.push(format!(
            "CREATE INDEX ferry_stage_row ON {} (ferry_row)",
            self.stage
        ));
        statements
    }

    /// Up to five keys that appear more than once in the stage, with their counts.
    pub(crate) fn duplicates(&self) -> String {
        format!(
            "SELECT {}, COUNT(*) FROM {} AS s GROUP BY {} HAVING COUNT(*) > 1 LIMIT 5",
            self.key_text(),
            self.stage,
            self.list("s", &self.key)
        )
    }

    /// Up to five keys that appear more than once in the target's scope, with their counts
    /// (after a first load too long for ferry to track every key in memory).
    pub(crate) fn duplicates_in_target(&self) -> String {
        format!(
            "SELECT {}, COUNT(*) FROM {} AS s WHERE {} GROUP BY {} HAVING COUNT(*) > 1 LIMIT 5",
            self.key_text(),
            self.target,
            self.in_scope("s"),
            self.list("s", &self.key)
        )
    }

    /// Creates the state table when it is missing (PostgreSQL: unlogged, since it can be
    /// rebuilt: losing it only makes the next sync write every row again).
    pub(crate) fn create_state(&self) -> Vec<String> {
        let unlogged = if self.dialect == Dialect::Postgres {
            "UNLOGGED "
        } else {
            ""
        };
        let index = match self.dialect {
            Dialect::Mysql => "CREATE UNIQUE INDEX ferry_state_key",
            _ => "CREATE UNIQUE INDEX IF NOT EXISTS",
        };
        let index_name = match self.dialect {
            Dialect::Mysql => String::new(),
            _ => self.state_index(),
        };
        vec![
            format!(
                "CREATE {unlogged}TABLE IF NOT EXISTS {} AS SELECT {}, ferry_hash FROM {} WHERE 1 = 0",
                self.state,
                self.list_plain(&self.key),
                self.stage
            ),
            format!(
                "{index} {index_name} ON {} ({})",
                self.state,
                self.list_plain(&self.key)
            ),
        ]
    }

    /// PostgreSQL: drops the state's unique index, for a first load into an empty state
    /// that builds it again at the end (one sorted build is cheaper than a million
    /// insertions), in the same transaction.
    pub(crate) fn drop_state_index(&self) -> Option<String> {
        (self.dialect == Dialect::Postgres && self.has_key())
            .then(|| format!("DROP INDEX IF EXISTS {}", self.state_index()))
    }

    /// The state's unique index, quoted (PostgreSQL and SQLite).
    fn state_index(&self) -> String {
        self.q(&format!("{}_key", self.state.trim_matches(['"', '`'])))
    }

    /// Whether the sync has a key.
    pub(crate) fn has_key(&self) -> bool {
        !self.key.is_empty()
    }

    /// The target table and its columns, quoted: where a first load writes directly.
    pub(crate) fn target_columns(&self) -> (String, String) {
        (self.target.clone(), self.list_plain(&self.columns))
    }

    /// The state table and its columns, quoted.
    pub(crate) fn state_columns(&self) -> (String, String) {
        (
            self.state.clone(),
            format!("{}, ferry_hash", self.list_plain(&self.key)),
        )
    }

    /// `COPY table (columns) FROM STDIN` (PostgreSQL).
    pub(crate) fn copy_into((table, columns): &(String, String)) -> String {
        format!("COPY {table} ({columns}) FROM STDIN")
    }

    /// 1 when the target has a row in scope, else 0.
    pub(crate) fn any_in_scope(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM (SELECT 1 AS one FROM {} AS t WHERE {} LIMIT 1) AS found",
            self.target,
            self.in_scope("t")
        )
    }

    /// Gathers the state's statistics after a first load (PostgreSQL, whose planner would
    /// otherwise take the unlogged table for small until autovacuum runs).
    pub(crate) fn analyze_state(&self) -> Option<String> {
        (self.dialect == Dialect::Postgres).then(|| format!("ANALYZE {}", self.state))
    }

    /// How many rows the state holds.
    pub(crate) fn count_state(&self) -> String {
        format!("SELECT COUNT(*) FROM {}", self.state)
    }

    /// The hash of every row the state holds whose key is still in the target (a row
    /// deleted by hand is not taken for unchanged, and is written again).
    pub(crate) fn state_hashes(&self) -> String {
        if self.dialect == Dialect::Mysql {
            // A key twice in the target gives its hash twice: the same set.
            return format!(
                "SELECT h.ferry_hash FROM {} AS h JOIN {} AS t ON {}",
                self.state,
                self.target,
                self.same_key("t", "h")
            );
        }
        format!(
            "SELECT h.ferry_hash FROM {} AS h WHERE EXISTS (SELECT 1 FROM {} AS t WHERE {})",
            self.state,
            self.target,
            self.same_key("t", "h")
        )
    }

    /// Fails when the state table is missing.
    pub(crate) fn probe_state(&self) -> String {
        format!("SELECT 1 FROM {} WHERE 1 = 0", self.state)
    }

    /// Creates an empty state for a plan when the sync has none yet (temporary: a plan
    /// writes nothing).
    pub(crate) fn create_plan_state(&self) -> String {
        format!(
            "CREATE TEMPORARY TABLE {} AS SELECT {}, ferry_hash FROM {} WHERE 1 = 0",
            self.state,
            self.list_plain(&self.key),
            self.stage
        )
    }

    /// The rows in scope of the target.
    pub(crate) fn count_in_scope(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM {} AS t WHERE {}",
            self.target,
            self.in_scope("t")
        )
    }

    /// Deletes the target rows in scope whose key is not staged.
    pub(crate) fn delete_gone(&self) -> String {
        let condition = format!(
            "{} AND NOT EXISTS (SELECT 1 FROM {} AS s WHERE {})",
            self.in_scope("t"),
            self.stage,
            self.same_key("s", "t")
        );
        self.delete_from(&self.target, "t", &condition)
    }

    /// Forgets the state of keys no longer in the target (after a mirror's delete, or when
    /// the target has no rows in scope).
    pub(crate) fn forget_deleted(&self) -> String {
        if self.dialect == Dialect::Mysql {
            // MariaDB runs the anti-join as a LEFT JOIN three times faster than NOT EXISTS.
            return format!(
                "DELETE h FROM {} AS h LEFT JOIN {} AS t ON {} WHERE t.{} IS NULL",
                self.state,
                self.target,
                self.same_key("t", "h"),
                self.q(&self.key[0])
            );
        }
        let condition = format!(
            "NOT EXISTS (SELECT 1 FROM {} AS t WHERE {})",
            self.target,
            self.same_key("t", "h")
        );
        self.delete_from(&self.state, "h", &condition)
    }

    /// Forgets the state of the staged rows (alias `s`) matching `condition`: rows the target
    /// refused or lacks, whose key may come back later and must not be passed for unchanged.
    pub(crate) fn forget_where(&self, condition: &str) -> String {
        match self.dialect {
            Dialect::Postgres => format!(
                "DELETE FROM {} AS h USING {} AS s WHERE {} AND {condition}",
                self.state,
                self.stage,
                self.same_key("s", "h")
            ),
            Dialect::Mysql => format!(
                "DELETE h FROM {} AS h JOIN {} AS s ON {} WHERE {condition}",
                self.state,
                self.stage,
                self.same_key("s", "h")
            ),
            _ => self.delete_from(
                &self.state,
                "h",
                &format!(
                    "EXISTS (SELECT 1 FROM {} AS s WHERE {} AND {condition})",
                    self.stage,
                    self.same_key("s", "h")
                ),
            ),
        }
    }

    /// `DELETE FROM table AS alias WHERE condition` (MySQL's form names the alias twice).
    fn delete_from(&self, table: &str, alias: &str, condition: &str) -> String {
        match self.dialect {
            Dialect::Mysql => format!("DELETE {alias} FROM {table} AS {alias} WHERE {condition}"),
            _ => format!("DELETE FROM {table} AS {alias} WHERE {condition}"),
        }
    }

    /// Staged rows whose key is not in the target (`update` rejects them).
    pub(crate) fn missing_condition(&self) -> String {
        format!("NOT {}", self.in_target())
    }

    /// Staged rows whose key is in the target.
    fn in_target(&self) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} AS t WHERE {})",
            self.target,
            self.same_key("t", "s")
        )
    }

    /// `c = s.c` for every non-key column `values` (each target column prefixed with
    /// `target`: `t.` on MySQL, nothing elsewhere).
    fn assignments(&self, values: &[String], target: &str) -> String {
        values
            .iter()
            .map(|c| format!("{target}{c} = s.{c}", c = self.q(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Records the staged rows matching `condition` as rejected for `reason`.
    pub(crate) fn reject_where(
        &self,
        condition: &str,
        reason: &str,
        fields: &RejectFields,
    ) -> String {
        format!(
            "INSERT INTO {} (sync_id, run_id, lease, row_key, reason, rejected_at) SELECT {}, {}, {}, {}, {}, {} FROM {} AS s WHERE {condition}",
            self.rejects,
            literal(self.dialect, &fields.sync_id),
            literal(self.dialect, &fields.run_id),
            fields.lease,
            self.row_label(),
            literal(self.dialect, reason),
            literal(self.dialect, &fields.at),
            self.stage
        )
    }

    /// Removes staged rows matching `condition` (rejected: nothing more is done with them).
    pub(crate) fn unstage_where(&self, condition: &str) -> String {
        self.delete_from(&self.stage, "s", condition)
    }

    /// Counts staged rows matching `condition`.
    pub(crate) fn count_staged(&self, condition: &str) -> String {
        format!("SELECT COUNT(*) FROM {} AS s WHERE {condition}", self.stage)
    }

    /// Up to `limit` keys of staged rows matching `condition`.
    pub(crate) fn keys_staged(&self, condition: &str, limit: usize) -> String {
        format!(
            "SELECT {} FROM {} AS s WHERE {condition} ORDER BY s.ferry_row LIMIT {limit}",
            self.row_label(),
            self.stage
        )
    }

    /// The stage rows `[low, high)` by number.
    pub(crate) fn rows_between(low: i64, high: i64) -> String {
        format!("s.ferry_row >= {low} AND s.ferry_row < {high}")
    }

    /// Updates the target rows whose staged values changed since the last sync, among staged
    /// rows `range`. `None` when every column is in the key (nothing to update).
    pub(crate) fn update_changed(&self, range: &str) -> Option<String> {
        let values = self.values();
        if values.is_empty() {
            return None;
        }
        let unchanged = format!(
            "NOT EXISTS (SELECT 1 FROM {} AS h WHERE {} AND h.ferry_hash = s.ferry_hash)",
            self.state,
            self.same_key("h", "s")
        );
        Some(match self.dialect {
            Dialect::Mysql => format!(
                "UPDATE {} AS t JOIN {} AS s ON {} SET {} WHERE {range} AND {unchanged}",
                self.target,
                self.stage,
                self.same_key("t", "s"),
                self.assignments(&values, "t.")
            ),
            _ => format!(
                "UPDATE {} AS t SET {} FROM {} AS s WHERE {} AND {range} AND {unchanged}",
                self.target,
                self.assignments(&values, ""),
                self.stage,
                self.same_key("t", "s")
            ),
        })
    }

    /// PostgreSQL: remembers the hash of the staged rows `range` and updates the target rows
    /// whose hash changed (or was not known), in one statement: the state's upsert returns
    /// the keys it changed, and only those rows are updated. One look at the state per row
    /// instead of two (`update_changed`, then `remember`). Only the hashes of keys in the
    /// target when `only_present` (`update`, which inserts nothing). `None` when every column
    /// is in the key.
    pub(crate) fn update_remembering(&self, range: &str, only_present: bool) -> Option<String> {
        let values = self.values();
        if values.is_empty() || self.dialect != Dialect::Postgres {
            return None;
        }
        let columns = self.list_plain(&self.key);
        let present = if only_present {
            format!(" AND {}", self.in_target())
        } else {
            String::new()
        };
        Some(format!(
            "WITH h AS (INSERT INTO {state} ({columns}, ferry_hash) SELECT {selected}, s.ferry_hash FROM {stage} AS s WHERE {range}{present} ON CONFLICT ({columns}) DO UPDATE SET ferry_hash = excluded.ferry_hash WHERE {state}.ferry_hash <> excluded.ferry_hash RETURNING {columns}) UPDATE {target} AS t SET {set} FROM {stage} AS s JOIN h ON {joined} WHERE {matched} AND {range}",
            state = self.state,
            selected = self.list("s", &self.key),
            stage = self.stage,
            target = self.target,
            set = self.assignments(&values, ""),
            joined = self.same_key("h", "s"),
            matched = self.same_key("t", "s"),
        ))
    }

    /// Inserts the staged rows `range` whose key is not in the target (every one without a key).
    pub(crate) fn insert_new(&self, range: &str) -> String {
        let mut condition = range.to_string();
        if !self.key.is_empty() {
            condition.push_str(&format!(
                " AND NOT EXISTS (SELECT 1 FROM {} AS t WHERE {})",
                self.target,
                self.same_key("t", "s")
            ));
        }
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {} AS s WHERE {condition}",
            self.target,
            self.list_plain(&self.columns),
            self.list("s", &self.columns),
            self.stage
        )
    }

    /// Remembers the hash of every staged key (only of keys now in the target when
    /// `only_present`): by one upsert on the state's unique key; on MySQL without that
    /// index (a TEXT key) by forgetting changed hashes, then adding the keys the state lacks.
    pub(crate) fn remember(&self, only_present: bool) -> Vec<String> {
        let mut condition = if only_present {
            self.in_target()
        } else {
            "1 = 1".to_string()
        };
        let columns = self.list_plain(&self.key);
        let selected = self.list("s", &self.key);
        if self.dialect == Dialect::Mysql && self.state_unique {
            // The selected hash, not `VALUES()` (which MySQL 8 deprecates).
            return vec![format!(
                "INSERT INTO {} ({columns}, ferry_hash) SELECT {selected}, s.ferry_hash FROM {} AS s WHERE {condition} ON DUPLICATE KEY UPDATE ferry_hash = s.ferry_hash",
                self.state, self.stage
            )];
        }
        if self.dialect != Dialect::Mysql {
            return vec![format!(
                "INSERT INTO {state} ({columns}, ferry_hash) SELECT {selected}, s.ferry_hash FROM {} AS s WHERE {condition} ON CONFLICT ({columns}) DO UPDATE SET ferry_hash = excluded.ferry_hash WHERE {state}.ferry_hash <> excluded.ferry_hash",
                self.stage,
                state = self.state
            )];
        }
        condition.push_str(&format!(
            " AND NOT EXISTS (SELECT 1 FROM {} AS h WHERE {})",
            self.state,
            self.same_key("h", "s")
        ));
        vec![
            format!(
                "DELETE h FROM {} AS h JOIN {} AS s ON {} WHERE s.ferry_hash <> h.ferry_hash",
                self.state,
                self.stage,
                self.same_key("s", "h")
            ),
            format!(
                "INSERT INTO {} ({columns}, ferry_hash) SELECT {selected}, s.ferry_hash FROM {} AS s WHERE {condition}",
                self.state, self.stage
            ),
        ]
    }

    /// The highest staged row number.
    pub(crate) fn last_row(&self) -> String {
        format!("SELECT COALESCE(MAX(ferry_row), 0) FROM {}", self.stage)
    }

    /// Records a reject found while staging (not in the stage).
    pub(crate) fn reject_value(&self, fields: &RejectFields, key: &str, reason: &str) -> String {
        format!(
            "INSERT INTO {} (sync_id, run_id, lease, row_key, reason, rejected_at) VALUES ({}, {}, {}, {}, {}, {})",
            self.rejects,
            literal(self.dialect, &fields.sync_id),
            literal(self.dialect, &fields.run_id),
            fields.lease,
            literal(self.dialect, key),
            literal(self.dialect, reason),
            literal(self.dialect, &fields.at)
        )
    }
}

/// Creates the rejects table `table` if missing (a temporary one for a plan).
pub(crate) fn create_rejects(dialect: Dialect, table: &str, temporary: bool) -> String {
    format!(
        "CREATE {}TABLE {}{} (sync_id VARCHAR(64) NOT NULL, run_id VARCHAR(255) NOT NULL, lease BIGINT NOT NULL, row_key TEXT NOT NULL, reason TEXT NOT NULL, rejected_at VARCHAR(40) NOT NULL)",
        if temporary { "TEMPORARY " } else { "" },
        if temporary { "" } else { "IF NOT EXISTS " },
        quote(dialect, table)
    )
}

/// The statements of one sync and run's fence: the highest fencing number of an attempt that
/// took it. An attempt takes it before reading, and publishes only while it still holds it.
pub(crate) struct Fence<'a> {
    /// The target's dialect.
    pub dialect: Dialect,
    /// The fence (a hash of the sync and the run).
    pub id: &'a str,
}

impl Fence<'_> {
    fn id(&self) -> String {
        literal(self.dialect, self.id)
    }

    /// Creates the fences table if missing.
    pub(crate) fn create_table(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {FENCES} (fence_id VARCHAR(64) NOT NULL PRIMARY KEY, sync_id VARCHAR(64) NOT NULL, run_id VARCHAR(255) NOT NULL, lease BIGINT NOT NULL, published_at VARCHAR(40))"
        )
    }

    /// Adds the fence at the attempt's lease unless it is there.
    pub(crate) fn add(&self, fields: &RejectFields) -> String {
        let values = format!(
            "({}, {}, {}, {})",
            self.id(),
            literal(self.dialect, &fields.sync_id),
            literal(self.dialect, &fields.run_id),
            fields.lease
        );
        match self.dialect {
            Dialect::Mysql => format!(
                "INSERT IGNORE INTO {FENCES} (fence_id, sync_id, run_id, lease) VALUES {values}"
            ),
            _ => format!(
                "INSERT INTO {FENCES} (fence_id, sync_id, run_id, lease) VALUES {values} ON CONFLICT (fence_id) DO NOTHING"
            ),
        }
    }

    /// Raises the fence to `lease` (a newer attempt takes the sync over).
    pub(crate) fn raise(&self, lease: i64) -> String {
        format!(
            "UPDATE {FENCES} SET lease = {lease} WHERE fence_id = {} AND lease < {lease}",
            self.id()
        )
    }

    /// Marks the fence published by `lease`, taking its row lock (so the check that follows
    /// and the commit see no newer attempt come in between).
    pub(crate) fn mark(&self, lease: i64, at: &str) -> String {
        format!(
            "UPDATE {FENCES} SET published_at = {} WHERE fence_id = {} AND lease = {lease}",
            literal(self.dialect, at),
            self.id()
        )
    }

    /// The fence's lease, as last committed: on MySQL a locking read (a plain one inside a
    /// transaction would read its snapshot, and miss a newer attempt's raise).
    pub(crate) fn lease(&self) -> String {
        let locking = if self.dialect == Dialect::Mysql {
            " FOR UPDATE"
        } else {
            ""
        };
        format!(
            "SELECT COALESCE(MAX(lease), 0) FROM {FENCES} WHERE fence_id = {}{locking}",
            self.id()
        )
    }
}

/// What every reject and fence row of an attempt says about it.
#[derive(Debug, Clone)]
pub(crate) struct RejectFields {
    /// The sync.
    pub sync_id: String,
    /// The run.
    pub run_id: String,
    /// The attempt's fencing number.
    pub lease: i64,
    /// When (RFC 3339).
    pub at: String,
}

/// A string literal for `dialect`.
pub(crate) fn literal(dialect: Dialect, text: &str) -> String {
    let mut escaped = text.replace('\'', "''");
    if dialect == Dialect::Mysql {
        escaped = escaped.replace('\\', "\\\\");
    }
    format!("'{escaped}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(dialect: Dialect) -> Sql {
        Sql::new(
            dialect,
            "app.class_scores",
            "ferry_state_y",
            REJECTS,
            &[
                "school_id".to_string(),
                "class_id".to_string(),
                "avg_points".to_string(),
            ],
            &["school_id".to_string(), "class_id".to_string()],
            &[("school_id".to_string(), "7".to_string())],
        )
    }

    #[test]
    fn statements_read_as_intended() {
        let pg = sql(Dialect::Postgres);
        assert_eq!(
            pg.update_changed("s.ferry_row >= 1 AND s.ferry_row < 9")
                .as_deref(),
            Some(
                r#"UPDATE "app"."class_scores" AS t SET "avg_points" = s."avg_points" FROM "ferry_stage" AS s WHERE t."school_id" = s."school_id" AND t."class_id" = s."class_id" AND s.ferry_row >= 1 AND s.ferry_row < 9 AND NOT EXISTS (SELECT 1 FROM "ferry_state_y" AS h WHERE h."school_id" = s."school_id" AND h."class_id" = s."class_id" AND h.ferry_hash = s.ferry_hash)"#
            )
        );
        assert_eq!(
            pg.delete_gone(),
            r#"DELETE FROM "app"."class_scores" AS t WHERE t."school_id" = '7' AND NOT EXISTS (SELECT 1 FROM "ferry_stage" AS s WHERE s."school_id" = t."school_id" AND s."class_id" = t."class_id")"#
        );
        assert_eq!(
            pg.update_remembering("s.ferry_row >= 1 AND s.ferry_row < 9", false)
                .as_deref(),
            Some(
                r#"WITH h AS (INSERT INTO "ferry_state_y" ("school_id", "class_id", ferry_hash) SELECT s."school_id", s."class_id", s.ferry_hash FROM "ferry_stage" AS s WHERE s.ferry_row >= 1 AND s.ferry_row < 9 ON CONFLICT ("school_id", "class_id") DO UPDATE SET ferry_hash = excluded.ferry_hash WHERE "ferry_state_y".ferry_hash <> excluded.ferry_hash RETURNING "school_id", "class_id") UPDATE "app"."class_scores" AS t SET "avg_points" = s."avg_points" FROM "ferry_stage" AS s JOIN h ON h."school_id" = s."school_id" AND h."class_id" = s."class_id" WHERE t."school_id" = s."school_id" AND t."class_id" = s."class_id" AND s.ferry_row >= 1 AND s.ferry_row < 9"#
            )
        );
        let mut mysql = sql(Dialect::Mysql);
        assert_eq!(mysql.update_remembering("1 = 1", false), None);
        assert!(
            pg.update_remembering("1 = 1", true)
                .is_some_and(|u| u.contains(
                    "WHERE 1 = 1 AND EXISTS (SELECT 1 FROM \"app\".\"class_scores\" AS t WHERE"
                ))
        );
        assert_eq!(
            mysql.remember(false),
            vec!["INSERT INTO `ferry_state_y` (`school_id`, `class_id`, ferry_hash) SELECT s.`school_id`, s.`class_id`, s.ferry_hash FROM `ferry_stage` AS s WHERE 1 = 1 ON DUPLICATE KEY UPDATE ferry_hash = s.ferry_hash".to_string()]
        );
        mysql.state_without_unique_key();
        assert!(mysql.remember(false)[0].starts_with("DELETE h FROM `ferry_state_y` AS h JOIN"));
        assert!(
            mysql
                .delete_gone()
                .starts_with("DELETE t FROM `app`.`class_scores` AS t WHERE")
        );
        assert!(mysql.duplicates().starts_with(
            "SELECT CONCAT('school_id=', s.`school_id`, ', class_id=', s.`class_id`), COUNT(*)"
        ));
        let sqlite = sql(Dialect::Sqlite);
        assert!(
            sqlite.duplicates().starts_with(
                r#"SELECT 'school_id=' || s."school_id" || ', class_id=' || s."class_id", COUNT(*)"#
            ),
            "{}",
            sqlite.duplicates()
        );
    }

    #[test]
    fn literals_escape_quotes() {
        assert_eq!(literal(Dialect::Postgres, "it's"), "'it''s'");
        assert_eq!(literal(Dialect::Mysql, r"a\'"), r"'a\\'''");
    }
}
