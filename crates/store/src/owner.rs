//! One owner per store: only the process holding the store's lock runs an engine on it.
//!
//! SQLite: an exclusive `flock` on `<database>.lock` beside the real file (symbolic links
//! resolved, so that every path to the database meets the same lock); the file stays as the
//! sign that an engine used the database. PostgreSQL: a session advisory lock held on a
//! connection of its own. Both are released by the kernel or the server
//! when the process dies, however it dies. The holder is named in `store_owner` so that a refused
//! process can say who holds the store. A later multi-node release replaces the lock with leases;
//! the engine asks only "do I still own the store?" ([`OwnerLock::verify`]).

use std::fs::File;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::Mutex;

use crate::{Pool, Store, StoreError};

/// The advisory lock key of a ferry store on PostgreSQL (`ferry` in ASCII).
const ADVISORY_KEY: i64 = 0x0066_6572_7279;

/// Proof of owning a store; dropping it releases the store.
#[derive(Debug)]
pub struct OwnerLock {
    held: Held,
    holder: String,
    shown: String,
}

#[derive(Debug)]
enum Held {
    File {
        _lock: Flock<File>,
    },
    Postgres {
        options: Box<PgConnectOptions>,
        connection: Mutex<Option<PgConnection>>,
    },
}

impl Store {
    /// Takes the store for `holder` (a description such as `ferry serve pid 12 on host`), or
    /// fails with [`StoreError::Owned`] naming the process that holds it.
    pub async fn acquire_owner(&self, holder: &str, at: i64) -> Result<OwnerLock, StoreError> {
        let held = match &self.pool {
            Pool::Sqlite(_) => {
                let file = self.file.as_ref().ok_or_else(|| {
                    StoreError::Unreadable("a SQLite store without a file".to_string())
                })?;
                // Never a descriptor of the database file itself: closing one would drop the
                // locks SQLite holds on it in this process (POSIX locks belong to the process).
                let path = crate::open::lock_path(&file.path);
                let lock_file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .or_else(|error| match error.kind() {
                        // A lock file this user may not write still takes a lock when read.
                        std::io::ErrorKind::PermissionDenied => std::fs::File::open(&path),
                        _ => Err(error),
                    })
                    .map_err(|cause| StoreError::Io {
                        action: "open the lock file",
                        path: path.display().to_string(),
                        cause,
                    })?;
                match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => Held::File { _lock: lock },
                    Err((_, Errno::EWOULDBLOCK)) => return Err(self.owned_error().await),
                    Err((_, errno)) => {
                        return Err(StoreError::Io {
                            action: "lock",
                            path: path.display().to_string(),
                            cause: errno.into(),
                        });
                    }
                }
            }
            Pool::Postgres(_) => {
                let options = self.pg_options.clone().ok_or_else(|| {
                    StoreError::Unreadable("a PostgreSQL store without options".to_string())
                })?;
                let mut connection = PgConnection::connect_with(&options).await?;
                if !try_advisory_lock(&mut connection).await? {
                    return Err(self.owned_error().await);
                }
                Held::Postgres {
                    options,
                    connection: Mutex::new(Some(connection)),
                }
            }
        };
        self.record_owner(holder, at).await?;
        Ok(OwnerLock {
            held,
            holder: holder.to_string(),
            shown: self.shown.to_string(),
        })
    }

    /// When the owner last said it was alive (Unix milliseconds), if the store ever had one.
    pub async fn owner_seen_at(&self) -> Result<Option<i64>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT seen_at FROM store_owner WHERE id = 1").fetch_optional(pool).await?)
        })
    }

    /// Who holds (or last held) the store, as recorded.
    pub async fn owner(&self) -> Result<Option<String>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT holder FROM store_owner WHERE id = 1").fetch_optional(pool).await?)
        })
    }

    async fn owned_error(&self) -> StoreError {
        // The holder writes its name just after it takes the lock: give it a moment.
        let mut holder = None;
        for _ in 0..10 {
            holder = self.owner().await.ok().flatten();
            if holder.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let holder = holder.unwrap_or_else(|| "another ferry process".to_string());
        StoreError::Owned {
            url: self.shown.to_string(),
            holder,
        }
    }

    async fn record_owner(&self, holder: &str, at: i64) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO store_owner (id, holder, since, seen_at) VALUES (1, $1, $2, $2) \
                 ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, since = EXCLUDED.since, seen_at = EXCLUDED.seen_at",
            )
            .bind(holder)
            .bind(at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}

impl OwnerLock {
    /// Whether this process still owns the store, saying it is alive at `at`. A file lock
    /// cannot be lost; an advisory lock is lost with its connection (a database restart): it is
    /// then taken again if no one else took it meanwhile, else [`StoreError::OwnershipLost`].
    pub async fn verify(&self, store: &Store, at: i64) -> Result<(), StoreError> {
        self.ensure_held(store).await?;
        let recorded = with_pool!(store, pool => {
            sqlx::query("UPDATE store_owner SET seen_at = $1 WHERE id = 1 AND holder = $2")
                .bind(at)
                .bind(&self.holder)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if recorded == 1 {
            return Ok(());
        }
        // Another holder is recorded: another process took the store.
        let holder = store
            .owner()
            .await?
            .unwrap_or_else(|| "another ferry process".to_string());
        Err(StoreError::OwnershipLost {
            url: self.shown.clone(),
            holder,
        })
    }

    async fn ensure_held(&self, store: &Store) -> Result<(), StoreError> {
        let Held::Postgres {
            options,
            connection,
        } = &self.held
        else {
            return Ok(());
        };
        let mut connection = connection.lock().await;
        if let Some(open) = connection.as_mut() {
            if open.ping().await.is_ok() {
                return Ok(());
            }
            *connection = None;
        }
        let mut fresh = PgConnection::connect_with(options).await?;
        if try_advisory_lock(&mut fresh).await? {
            *connection = Some(fresh);
            return Ok(());
        }
        let holder = store
            .owner()
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "another ferry process".to_string());
        Err(StoreError::OwnershipLost {
            url: self.shown.clone(),
            holder,
        })
    }
}

async fn try_advisory_lock(connection: &mut PgConnection) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(ADVISORY_KEY)
        .fetch_one(connection)
        .await?)
}
