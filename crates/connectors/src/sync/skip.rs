//! Leaving unchanged rows out of the stage, and catching keys seen twice. Before reading, an
//! `upsert` or `update` sync loads the hashes of the rows it wrote last time (each hash covers
//! a row's key and values); a source row whose hash is among them is unchanged and is not
//! staged, so a rerun stages and publishes only what changed. Every keyed sync keeps a set of
//! the key hashes it has read, so a duplicate is caught whether its rows were staged, left out
//! or refused. Both sets are bounded: past [`TRACKED`] keys, rows are staged again and the
//! stage's own duplicate check covers them.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use twox_hash::XxHash3_64;

use crate::transfer::Value;

/// The most keys (and synced hashes) held in memory: two hash sets of at most 8 bytes and a
/// control byte per slot (at most 72 MB each at this size), so the process stays under 200 MB.
pub(crate) const TRACKED: usize = 6_000_000;

/// What a rerun knows of the last sync.
pub(crate) struct Skipper {
    /// The hashes of the rows last synced (none: every row is staged).
    synced: Option<HashSet<u64, BuildHasherDefault<Identity>>>,
    /// The keys seen so far (hashed), up to [`TRACKED`].
    keys: HashSet<u64, BuildHasherDefault<Identity>>,
}

/// The hasher of a set of hashes: they are spread already.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// What to do with a row.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Stage it.
    Stage,
    /// Leave it out: it is as last synced.
    Unchanged,
    /// Its key was seen before.
    Duplicate,
}

impl Skipper {
    /// A skipper over the hashes of the last sync (`None`: it only catches repeated keys).
    pub(crate) fn new(hashes: Option<Vec<i64>>) -> Self {
        let expected = hashes.as_ref().map_or(0, |h| h.len().min(TRACKED));
        let synced = hashes.map(|hashes| {
            let mut synced =
                HashSet::with_capacity_and_hasher(hashes.len(), BuildHasherDefault::default());
            synced.extend(
                hashes
                    .into_iter()
                    .map(|h| u64::from_ne_bytes(h.to_ne_bytes())),
            );
            synced
        });
        Self {
            synced,
            keys: HashSet::with_capacity_and_hasher(expected, BuildHasherDefault::default()),
        }
    }

    /// The verdict on `row`, whose key is at positions `key`, with hash `hash`.
    pub(crate) fn judge(&mut self, row: &[Value], key: &[usize], hash: i64) -> Verdict {
        let hashed = key_hash(row, key);
        if self.keys.contains(&hashed) {
            return Verdict::Duplicate;
        }
        if self.keys.len() >= TRACKED {
            // Untracked from here on: staged, so that the stage's check sees it.
            return Verdict::Stage;
        }
        self.keys.insert(hashed);
        let row = u64::from_ne_bytes(hash.to_ne_bytes());
        if self
            .synced
            .as_ref()
            .is_some_and(|synced| synced.contains(&row))
        {
            Verdict::Unchanged
        } else {
            Verdict::Stage
        }
    }
}

/// The hash (XXH3) of a row's key values.
fn key_hash(row: &[Value], key: &[usize]) -> u64 {
    let mut hasher = XxHash3_64::with_seed(0);
    for &i in key {
        super::rows::write_value(&mut hasher, &row[i]);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_rows_are_left_out_and_repeated_keys_caught() {
        let mut skipper = Skipper::new(Some(vec![30, 10, 20]));
        let one = [Value::Int(1), Value::Text("a".into())];
        let two = [Value::Int(2), Value::Text("a".into())];
        assert_eq!(skipper.judge(&one, &[0], 20), Verdict::Unchanged);
        assert_eq!(skipper.judge(&two, &[0], 21), Verdict::Stage);
        assert_eq!(skipper.judge(&one, &[0], 99), Verdict::Duplicate);
        let mut keys_only = Skipper::new(None);
        assert_eq!(keys_only.judge(&one, &[0], 20), Verdict::Stage);
        assert_eq!(keys_only.judge(&one, &[0], 20), Verdict::Duplicate);
    }
}
