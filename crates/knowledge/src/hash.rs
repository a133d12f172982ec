//! The hasher of the knowledge's lookup tables.
//!
//! Every card text and every code list is looked up several times per service call, and the
//! standard library's SipHash was a visible share of a call's instructions. These tables are
//! built once from the reviewed data files and never take a key from a request (requests only
//! look keys up), so they need no protection against keys chosen to collide: a lookup costs at
//! most the probe chain of the table's own keys. The multiply-rotate hash of rustc's `FxHasher`
//! (reimplemented here, a few lines) hashes eight bytes per step. Tables that a request fills
//! (draft orders by reference, Medications by id) keep SipHash.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A map built from the knowledge files (see the module's documentation).
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A set built from the knowledge files (see the module's documentation).
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

/// rustc's `FxHasher`: `hash = (hash.rotate_left(5) ^ word) * K` for each machine word.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length first: the zero padding of the last word must not make `"a"` and
        // `"a\0"` the same.
        self.add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            // `chunks_exact(8)` gives slices of exactly eight bytes.
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_map_finds_every_key_it_was_given_and_no_other() {
        let keys: Vec<String> = (0..2_000)
            .map(|i| format!("factor.{i}"))
            .chain(["", "a", "abcdefgh", "abcdefghi", "é", "L04AA29"].map(String::from))
            .collect();
        let map: FastMap<String, usize> = keys.iter().cloned().zip(0..).collect();
        assert_eq!(map.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.get(k.as_str()), Some(&i), "{k}");
        }
        for absent in ["factor.2000", "abcdefgh ", "L04AA2", "e"] {
            assert_eq!(map.get(absent), None, "{absent}");
        }
    }

    #[test]
    fn strings_differing_only_after_a_word_boundary_hash_apart() {
        let h = |s: &str| {
            let mut h = FastHasher::default();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_ne!(h("abcdefgh"), h("abcdefghi"));
        assert_ne!(h("abcdefgh1"), h("abcdefgh2"));
        assert_ne!(h(""), h("\0"));
        assert_ne!(h("a"), h("a\0"));
    }
}
