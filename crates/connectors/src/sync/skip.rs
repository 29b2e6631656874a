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

/// The most keys (and synced hashes) held in memory: two hash sets of 8 bytes and a control
/// byte per slot, 2^22 slots at most (38 MB each; a set grows by doubling when it is 7/8
/// full), so the process stays well under 200 MB whatever the row count.
pub(crate) const TRACKED: usize = 3_600_000;

/// What a rerun knows of the last sync.
pub(crate) struct Skipper {
    /// The hashes of the rows last synced (none: every row is staged).
    synced: Option<HashSet<u64, BuildHasherDefault<Identity>>>,
    /// The keys seen so far (hashed), up to [`TRACKED`].
    keys: HashSet<u64, BuildHasherDefault<Identity>>,
    /// The bytes of the key being hashed (kept from row to row).
    bytes: Vec<u8>,
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
    /// A skipper that will hold up to `synced` hashes of the last sync, given by
    /// [`Skipper::add_synced`] (`None`: it only catches repeated keys).
    pub(crate) fn new(synced: Option<usize>) -> Self {
        let expected = synced.map_or(0, |n| n.min(TRACKED));
        Self {
            synced: synced.map(|_| {
                HashSet::with_capacity_and_hasher(expected, BuildHasherDefault::default())
            }),
            keys: HashSet::with_capacity_and_hasher(expected, BuildHasherDefault::default()),
            bytes: Vec::new(),
        }
    }

    /// Adds the hash of a row last synced (past [`TRACKED`] of them, the others are staged
    /// and compared in the database).
    pub(crate) fn add_synced(&mut self, hash: i64) {
        if let Some(synced) = self.synced.as_mut()
            && synced.len() < TRACKED
        {
            synced.insert(u64::from_ne_bytes(hash.to_ne_bytes()));
        }
    }

    /// The verdict on `row`, whose key is at positions `key`, with hash `hash`.
    pub(crate) fn judge(&mut self, row: &[Value], key: &[usize], hash: i64) -> Verdict {
        let hashed = key_hash(row, key, &mut self.bytes);
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

/// The hash (XXH3) of a row's key values, made in `bytes`.
fn key_hash(row: &[Value], key: &[usize], bytes: &mut Vec<u8>) -> u64 {
    bytes.clear();
    for &i in key {
        super::rows::write_value(bytes, &row[i]);
    }
    XxHash3_64::oneshot(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_rows_are_left_out_and_repeated_keys_caught() {
        let mut skipper = Skipper::new(Some(3));
        for hash in [30, 10, 20] {
            skipper.add_synced(hash);
        }
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
