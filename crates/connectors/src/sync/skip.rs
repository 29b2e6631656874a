//! Leaving unchanged rows out of the stage. Before reading, an `upsert` or `update` sync loads
//! the hashes of the rows it wrote last time (each hash covers a row's key and values); a
//! source row whose hash is among them is unchanged and is not staged, so a rerun stages and
//! publishes only what changed. Duplicate keys among the rows left out are caught here, by a
//! set of key hashes. Both sets are bounded: past [`TRACKED`] keys, rows are staged again and
//! the stage's own duplicate check covers them.

use std::collections::HashSet;
use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};

use crate::transfer::Value;

/// The most keys (and synced hashes) held in memory: about 8 bytes each for the hashes, 16
/// for the key set, so well under 200 MB.
pub(crate) const TRACKED: usize = 6_000_000;

/// What a rerun knows of the last sync.
pub(crate) struct Skipper {
    /// The hashes of the rows last synced, sorted.
    synced: Vec<i64>,
    /// The keys seen so far (hashed), up to [`TRACKED`].
    keys: HashSet<u64, BuildHasherDefault<DefaultHasher>>,
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
    /// A skipper over the hashes of the last sync.
    pub(crate) fn new(mut synced: Vec<i64>) -> Self {
        synced.sort_unstable();
        Self {
            synced,
            keys: HashSet::default(),
        }
    }

    /// The verdict on a row with key values `key` and hash `hash`.
    pub(crate) fn judge(&mut self, key: &[&Value], hash: i64) -> Verdict {
        let hashed = self.keys.hasher().hash_one(KeyOf(key));
        if self.keys.contains(&hashed) {
            return Verdict::Duplicate;
        }
        if self.keys.len() >= TRACKED {
            // Untracked from here on: staged, so that the stage's check sees it.
            return Verdict::Stage;
        }
        self.keys.insert(hashed);
        if self.synced.binary_search(&hash).is_ok() {
            Verdict::Unchanged
        } else {
            Verdict::Stage
        }
    }
}

/// Key values, hashed by value.
struct KeyOf<'a>(&'a [&'a Value]);

impl std::hash::Hash for KeyOf<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for value in self.0 {
            match value {
                Value::Null => 0u8.hash(state),
                Value::Int(n) => (1u8, n).hash(state),
                Value::Float(n) => (2u8, n.to_bits()).hash(state),
                Value::Text(text) => (3u8, text).hash(state),
                Value::Bool(b) => (4u8, b).hash(state),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_rows_are_left_out_and_repeated_keys_caught() {
        let mut skipper = Skipper::new(vec![30, 10, 20]);
        let one = Value::Int(1);
        let two = Value::Int(2);
        assert_eq!(skipper.judge(&[&one], 20), Verdict::Unchanged);
        assert_eq!(skipper.judge(&[&two], 21), Verdict::Stage);
        assert_eq!(skipper.judge(&[&one], 99), Verdict::Duplicate);
    }
}
