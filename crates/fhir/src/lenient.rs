//! Wrappers that let one malformed field fail alone.
//!
//! serde cannot back out of a half-read value, so [`Lenient`] first takes the field as a
//! borrowed [`RawValue`] (a scan, no allocation) and only then tries to read it as `T`. A field
//! of the wrong shape becomes [`Lenient::Bad`] instead of failing the resource, the Bundle and
//! the request around it.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

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
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
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
}
