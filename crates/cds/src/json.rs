//! The response writer: compact JSON, byte for byte what `serde_json::to_writer` gives, with
//! strings escaped eight bytes at a time.
//!
//! Why not serde_json: its string escaping looks every byte up in a table, and card texts are
//! most of a response's bytes; the profile of the running service put that loop at about 5%
//! of a call's instructions, and its escaping cannot be replaced through its `Formatter`.
//! Everything but strings is handed to serde_json (numbers are written by its own code), so
//! the only thing decided here is where a string's plain runs end
//! ([`jakguard_fhir::scan::plain_run`], the same test the request reader uses) and how the
//! bytes that end them are escaped (as serde_json escapes them: `\"`, `\\`, `\b`, `\f`, `\n`,
//! `\r`, `\t`, `\u00XX` in lower-case hex).
//!
//! **Invariant:** for every value whose maps have string keys (every response's), [`to_vec`]
//! gives exactly the bytes `serde_json::to_vec` gives, or an error where serde_json gives one
//! (maps with integer or boolean keys, which serde_json quotes, are refused here); pinned by
//! the tests below (a table of strings, every character below U+0800, random strings, every
//! serde shape, every fixture's response) and by `jakguard-fuzz`, which compares both
//! writers on every response it gets.

use serde::ser::{self, Serialize};

/// What `serde_json` serializes a `RawValue` as: a struct of this name with one field holding
/// the raw text (serde_json's `raw.rs`). Written as it is, as serde_json writes it.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Appends `value` as compact JSON to `out`. On an error, what `out` holds is unspecified.
pub fn to_writer<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    value.serialize(&mut Writer {
        out,
        raw_next: false,
    })
}

/// `value` as compact JSON.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(128);
    to_writer(&mut out, value)?;
    Ok(out)
}

/// A scalar written by serde_json itself, so that numbers are spelled as it spells them.
fn delegate<T: Serialize>(out: &mut Vec<u8>, v: T) -> Result<(), Error> {
    serde_json::to_writer(out, &v).map_err(ser::Error::custom)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let mut rest = s.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    loop {
        let plain = jakguard_fhir::scan::plain_run(rest);
        out.extend_from_slice(&rest[..plain]);
        let Some(&byte) = rest.get(plain) else {
            break;
        };
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
        }
        rest = &rest[plain + 1..];
    }
    out.push(b'"');
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Set while a `RawValue`'s field is written: its one string is JSON already.
    raw_next: bool,
}

/// An array, object or struct being written; `first` until its first element.
struct Compound<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    /// `}` or `]`, and for a variant the `}` of its wrapping object as well.
    close: &'static [u8],
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if !self.first {
            self.w.out.push(b',');
        }
        self.first = false;
    }
    fn key(&mut self, key: &str) {
        self.comma();
        write_str(self.w.out, key);
        self.w.out.push(b':');
    }
    fn end(self) -> Result<(), Error> {
        self.w.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl<'w, 'a> Writer<'a> {
    /// `{"variant":`, the object that wraps a variant's value (serde_json's externally tagged
    /// form).
    fn open_variant(&mut self, variant: &str) {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
    }

    fn open(&'w mut self, open: &'static [u8], close: &'static [u8]) -> Compound<'w, 'a> {
        self.out.extend_from_slice(open);
        Compound {
            w: self,
            first: true,
            close,
        }
    }
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = StructWriter<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        if std::mem::take(&mut self.raw_next) {
            self.out.extend_from_slice(v.as_bytes());
        } else {
            write_str(self.out, v);
        }
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        delegate(self.out, v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.open_variant(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'w, 'a>, Error> {
        Ok(self.open(b"[", b"]"))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'w, 'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Compound<'w, 'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, Error> {
        self.open_variant(variant);
        Ok(self.open(b"[", b"]}"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'w, 'a>, Error> {
        Ok(self.open(b"{", b"}"))
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<StructWriter<'w, 'a>, Error> {
        if name == RAW_VALUE_TOKEN {
            return Ok(StructWriter::Raw(self));
        }
        Ok(StructWriter::Fields(self.open(b"{", b"}")))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, Error> {
        self.open_variant(variant);
        Ok(self.open(b"{", b"}}"))
    }
}

impl Compound<'_, '_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.comma();
        value.serialize(&mut *self.w)
    }
}

/// Arrays, tuples and the array of a tuple variant: elements after commas.
macro_rules! sequence_like {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                Compound::end(self)
            }
        }
    )*};
}

sequence_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.comma();
        // Object keys must be strings: serde_json also quotes integer and boolean keys, which
        // no response has (refused here, see the module's invariant); anything else it
        // refuses too.
        let start = self.w.out.len();
        key.serialize(&mut *self.w)?;
        if self.w.out.get(start) != Some(&b'"') {
            return Err(Error("key must be a string".into()));
        }
        self.w.out.push(b':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

/// A struct's fields, or a `RawValue`'s text.
enum StructWriter<'w, 'a> {
    Fields(Compound<'w, 'a>),
    Raw(&'w mut Writer<'a>),
}

impl ser::SerializeStruct for StructWriter<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        match self {
            StructWriter::Fields(c) => {
                c.key(key);
                value.serialize(&mut *c.w)
            }
            StructWriter::Raw(w) => {
                w.raw_next = true;
                value.serialize(&mut **w)?;
                if std::mem::take(&mut w.raw_next) {
                    return Err(Error("a RawValue without its text".into()));
                }
                Ok(())
            }
        }
    }
    fn end(self) -> Result<(), Error> {
        match self {
            StructWriter::Fields(c) => c.end(),
            StructWriter::Raw(_) => Ok(()),
        }
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.key(key);
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::value::RawValue;

    fn same_as_serde_json<T: Serialize + ?Sized>(value: &T) {
        let ours = to_vec(value).expect("written");
        let theirs = serde_json::to_vec(value).expect("serde_json");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let cases = [
            "",
            "plain",
            "exactly8",
            "sixteen bytes!!!",
            "\"",
            "\\",
            "a\"b\\c",
            "tab\tline\nreturn\rfeed\u{c}back\u{8}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "accents: prescrire à un patient âgé de 65 ans ou plus",
            "emoji 💊 and \u{2028} separators",
            "ends with a quote\"",
            "\"starts with one",
            "seven\"\"\"\"\"\"\"",
        ];
        for s in cases {
            same_as_serde_json(s);
        }
    }

    #[test]
    fn every_character_below_u0800_is_written_as_serde_json_writes_it() {
        for c in (0u32..=0x10ffff).filter_map(char::from_u32).take(0x800) {
            // At every position within an eight-byte chunk.
            for pad in 0..9 {
                let s = format!("{}{c}{}", "x".repeat(pad), "y".repeat(8 - pad));
                same_as_serde_json(&s);
            }
        }
    }

    #[test]
    fn random_strings_are_written_as_serde_json_writes_them() {
        // A fixed xorshift: the same strings on every run, with quotes, backslashes, controls
        // and multi-byte characters dense enough to fall everywhere within a chunk.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = ['a', ' ', '"', '\\', '\n', '\u{1}', 'é', '💊', '\u{7f}', 'Z'];
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((x >> (i % 60)) % alphabet.len() as u64) as usize])
                .collect();
            same_as_serde_json(&s);
        }
    }

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(u8, String),
        Struct { a: Option<bool>, b: f64 },
    }

    #[derive(Serialize)]
    struct Everything<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        n: i64,
        u: u32,
        f: f64,
        nan: f64,
        neg: f64,
        tiny: f64,
        none: Option<String>,
        some: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        skipped: Vec<u8>,
        list: Vec<Vec<bool>>,
        empty: Vec<String>,
        map: std::collections::BTreeMap<String, i32>,
        shapes: Vec<Shape>,
        raw: Option<Box<RawValue>>,
        unit: (),
        bytes: &'a [u8],
        c: char,
    }

    #[test]
    fn every_shape_a_response_may_hold_is_written_as_serde_json_writes_it() {
        let value = Everything {
            kind: "update",
            n: -42,
            u: 7,
            f: 0.1 + 0.2,
            nan: f64::NAN,
            neg: -1e300,
            tiny: 5e-324,
            none: None,
            some: Some("x\"y"),
            skipped: vec![],
            list: vec![vec![true, false], vec![]],
            empty: vec![],
            map: [("k\"1".to_string(), 1), ("k2".to_string(), 2)].into(),
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(3),
                Shape::Tuple(1, "t".into()),
                Shape::Struct { a: None, b: 2.5 },
            ],
            raw: Some(
                RawValue::from_string(
                    r#"{"resourceType": "MedicationRequest", "a":[1, 2]}"#.into(),
                )
                .unwrap(),
            ),
            unit: (),
            bytes: b"ab",
            c: '"',
        };
        same_as_serde_json(&value);
    }

    #[test]
    fn maps_with_keys_that_are_not_strings_are_refused() {
        let map: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(to_vec(&map).is_err());
        assert!(serde_json::to_vec(&map).is_err());
    }

    /// The response of every fixture request, in both languages, byte for byte.
    #[test]
    fn every_fixture_response_is_written_as_serde_json_writes_it() {
        use jakguard_knowledge::{Knowledge, Lang};
        let engine = crate::Engine::new(std::sync::Arc::new(Knowledge::embedded().unwrap()));
        let today = jakguard_rules::Date::parse("2026-12-01").unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
        let mut answered = 0;
        for entry in std::fs::read_dir(dir).expect("fixtures/requests") {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            let hook = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["hook"]
                .as_str()
                .map(|h| format!("jakguard-{h}"));
            let Some(service) = hook else { continue };
            for lang in [Lang::En, Lang::Fr] {
                if let Ok(ev) = engine.evaluate(&service, &body, lang, today) {
                    same_as_serde_json(&ev.response);
                    answered += 1;
                }
            }
        }
        assert!(answered >= 40, "{answered} responses compared");
    }
}
