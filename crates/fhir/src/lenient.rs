//! Wrappers that let one malformed field fail alone.
//!
//! serde cannot back out of a half-read value, so [`Lenient`] first takes the field as a
//! borrowed [`RawValue`] (a scan, no allocation) and only then tries to read it as `T`. A field
//! of the wrong shape becomes [`Lenient::Bad`] instead of failing the resource, the Bundle and
//! the request around it.
//!
//! That safety has a price: each wrapper scans its value once more, so an element nested in
//! five wrappers is scanned six times. [`parse`] therefore reads a value in one strict pass
//! first (each wrapper deserialises its `T` in place, as a plain `T` or `Vec<T>` would) and only
//! when that pass fails reads it again element by element. A well-formed value gives exactly
//! what the lenient pass would have given (every wrapper `Ok`, the same strings); a
//! malformed one costs both passes and gives the lenient result. The profile of
//! `evaluate/typical` showed 85% of the instructions in these repeated scans.

use std::cell::Cell;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

thread_local! {
    /// Whether the wrappers are inside the strict pass of [`parse`] on this thread.
    static STRICT: Cell<bool> = const { Cell::new(false) };
}

/// Sets the strict pass for its lifetime, restoring the previous mode even on unwind.
struct StrictPass(bool);

impl StrictPass {
    fn enter() -> StrictPass {
        StrictPass(STRICT.with(|s| s.replace(true)))
    }
}

impl Drop for StrictPass {
    fn drop(&mut self) {
        STRICT.with(|s| s.set(self.0));
    }
}

pub(crate) fn strict() -> bool {
    STRICT.with(Cell::get)
}

/// Only the strict pass of [`parse`]: `Err` when anything is malformed, for a caller whose
/// fallback is a different (exact, slower) reading altogether. Every wrapper read inside it,
/// however deep (an [`crate::InPlace`] inside a larger document included), is strict.
pub fn parse_strict<'de, T: Deserialize<'de>>(text: &'de str) -> serde_json::Result<T> {
    let _strict = StrictPass::enter();
    serde_json::from_str::<T>(text)
}

/// [`parse_strict`] with [`crate::scan`]'s deserializer instead of serde_json's: the same
/// result whenever it succeeds, for less work, and more often an error (which the caller's
/// fallback reads). For the one-pass readings, whose reference is read with serde_json.
pub fn parse_one_pass<'de, T: Deserialize<'de>>(text: &'de str) -> serde_json::Result<T> {
    let _strict = StrictPass::enter();
    crate::scan::from_str::<T>(text)
}

/// Reads `T` from `text` as `serde_json::from_str` would with the wrappers lenient, in one pass
/// when the value is well formed (see the module's documentation).
pub fn parse<'de, T: Deserialize<'de>>(text: &'de str) -> serde_json::Result<T> {
    // The strict pass with crate::scan: whenever it succeeds it gives what serde_json's would.
    let fast = parse_one_pass::<T>(text);
    match fast {
        Ok(v) => Ok(v),
        // Something is malformed (or merely unusual, such as a single `contained` object):
        // the lenient pass decides, element by element.
        Err(_) => serde_json::from_str::<T>(text),
    }
}

/// A value that was read, or a value that was present but had the wrong shape.
#[derive(Debug, Clone)]
pub enum Lenient<T> {
    Ok(T),
    Bad,
}

impl<T> Lenient<T> {
    pub fn ok(&self) -> Option<&T> {
        match self {
            Lenient::Ok(v) => Some(v),
            Lenient::Bad => None,
        }
    }

    pub fn is_bad(&self) -> bool {
        matches!(self, Lenient::Bad)
    }

    /// The value, if it was read.
    pub fn into_ok(self) -> Option<T> {
        match self {
            Lenient::Ok(v) => Some(v),
            Lenient::Bad => None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if strict() {
            // Any error fails the whole strict pass, which [`parse`] then redoes leniently.
            return T::deserialize(d).map(Lenient::Ok);
        }
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        Ok(match serde_json::from_str::<T>(raw.get()) {
            Ok(v) => Lenient::Ok(v),
            Err(_) => Lenient::Bad,
        })
    }
}

/// A list that some clients send as a single object: `[a, b]` or `a`. Each element is lenient.
#[derive(Debug, Clone)]
pub struct Many<T>(pub Vec<Lenient<T>>);

impl<T> Default for Many<T> {
    fn default() -> Self {
        Many(Vec::new())
    }
}

impl<T> Many<T> {
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().filter_map(Lenient::ok)
    }

    pub fn has_bad(&self) -> bool {
        self.0.iter().any(Lenient::is_bad)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Many<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if strict() {
            return d.deserialize_any(StrictMany(PhantomData));
        }
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        let text = raw.get();
        if text.starts_with('[') {
            Ok(match serde_json::from_str::<Vec<Lenient<T>>>(text) {
                Ok(v) => Many(v),
                Err(_) => Many(vec![Lenient::Bad]),
            })
        } else if text == "null" {
            Ok(Many(Vec::new()))
        } else {
            Ok(Many(vec![match serde_json::from_str::<T>(text) {
                Ok(v) => Lenient::Ok(v),
                Err(_) => Lenient::Bad,
            }]))
        }
    }
}

/// The strict pass of [`Many`]: an array, `null`, or a single object, read in place. Anything
/// else (a single string, say) is refused, and the lenient pass reads it as `Bad`.
struct StrictMany<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for StrictMany<T> {
    type Value = Many<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array, null or an object")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Many<T>, E> {
        Ok(Many(Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Many<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element::<T>()? {
            out.push(Lenient::Ok(v));
        }
        Ok(Many(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Many<T>, A::Error> {
        // The same visitor path as `from_str::<T>` of an object; the values are still read by
        // serde_json's own deserialiser, so borrowed strings and `RawValue`s behave the same.
        T::deserialize(MapAccessDeserializer::new(map)).map(|v| Many(vec![Lenient::Ok(v)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        name: Option<Lenient<Cow<'a, str>>>,
        #[serde(default)]
        list: Many<u32>,
    }

    #[test]
    fn a_field_of_the_wrong_shape_fails_alone() {
        let p: Probe =
            serde_json::from_str(r#"{"name": {"oops": 1}, "list": [1, "x", 3]}"#).unwrap();
        assert!(p.name.unwrap().is_bad());
        assert_eq!(p.list.iter().copied().collect::<Vec<_>>(), [1, 3]);
        assert!(p.list.has_bad());
    }

    #[test]
    fn a_single_object_is_read_as_a_list_of_one() {
        let p: Probe = serde_json::from_str(r#"{"list": 7}"#).unwrap();
        assert_eq!(p.list.iter().copied().collect::<Vec<_>>(), [7]);
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner<'a> {
        #[serde(borrow)]
        a: Option<Lenient<Cow<'a, str>>>,
        b: Option<Lenient<u32>>,
    }

    #[derive(Debug, Deserialize)]
    struct Outer<'a> {
        #[serde(borrow, default)]
        items: Many<Inner<'a>>,
        #[serde(borrow)]
        one: Option<Lenient<Inner<'a>>>,
        #[serde(borrow, default)]
        raw: Many<&'a RawValue>,
    }

    impl<T: PartialEq> PartialEq for Lenient<T> {
        fn eq(&self, other: &Self) -> bool {
            match (self, other) {
                (Lenient::Ok(a), Lenient::Ok(b)) => a == b,
                (Lenient::Bad, Lenient::Bad) => true,
                _ => false,
            }
        }
    }

    /// What the lenient pass alone reads, to compare with [`parse`].
    fn summary(o: &Outer) -> String {
        format!(
            "{:?} {:?} {:?}",
            o.items.0,
            o.one,
            o.raw
                .0
                .iter()
                .map(|r| r.ok().map(|r| r.get()))
                .collect::<Vec<_>>()
        )
    }

    #[test]
    fn the_one_pass_read_gives_what_the_lenient_read_gives() {
        let cases = [
            r#"{"items": [{"a": "x", "b": 1}, {"a": "y\u00e9"}], "one": {"b": 2}, "raw": [{"k": [1]}]}"#,
            r#"{"items": {"a": "single"}, "raw": {"k": 1}}"#,
            r#"{"items": null, "one": null, "raw": null}"#,
            r#"{"items": [{"a": 5}, "bad", {"b": "x"}], "one": {"a": []}}"#,
            r#"{"items": "bad", "one": 3, "raw": "x", "other": {"deep": [[[{}]]]}}"#,
            r#"{}"#,
        ];
        for text in cases {
            let lenient: Outer = serde_json::from_str(text).unwrap();
            let fast: Outer = parse(text).unwrap();
            assert_eq!(summary(&fast), summary(&lenient), "{text}");
        }
        assert!(!strict(), "the strict pass ends with parse");
    }
}
