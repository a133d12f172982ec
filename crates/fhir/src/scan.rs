//! A strict JSON deserializer for the one-pass readings and the strict passes, cheaper than
//! serde_json's on the bodies EHRs send.
//!
//! The profile of the running service put serde_json's scanning (skipping the elements
//! jakguard does not read, finding keys, eating indentation) at about 250 k instructions of a
//! 630 k-instruction call, more than the floor's whole `IgnoredAny` pass. Half of the bytes of a
//! pretty-printed FHIR body are whitespace, eaten there one byte at a time, and most of the rest
//! is skipped. This deserializer does the same work with fewer steps: indentation and strings
//! are scanned eight bytes at a time, and a skipped value is walked by one loop with its
//! brackets on a bit stack (5.8 instructions per byte of the fixtures against 11.1).
//!
//! Invariant: **whenever [`from_str`] succeeds, it gives what `serde_json::from_str` gives for
//! the same text and type**, so the readings it serves need no reference of their own. It gets
//! there by accepting less, never more, and by handing serde_json every value whose meaning it
//! does not decide itself:
//! - what it decides: structure (objects, arrays, commas, colons, whitespace), strings without
//!   escapes, `null` before an `Option`, and values skipped unread; each checked as serde_json
//!   checks it, or more strictly;
//! - what it hands over: numbers, booleans and strings with escapes. Their exact span is found
//!   first and serde_json reads that span with the same request, so numbers round the same way
//!   and escapes decode the same way. A `RawValue` gets its span as serde_json's own
//!   deserializer gives it (`RawSpan`);
//! - what it refuses (an error, so that the caller falls back to the exact reading): keys with
//!   escapes, a struct written as an array, nesting deeper than [`MAX_DEPTH`], keys read as
//!   anything but strings.
//!
//! It also reads [`Spanned`], a value together with its raw text in one scan, which no other
//! deserializer reads.
//!
//! Its errors carry no position: the caller never shows them, it reads the body again with
//! serde_json, which names the cause. `tests` below holds it to serde_json on a table of
//! well-formed and malformed texts and on random mutations of the fixtures.

use serde::de::{self, DeserializeSeed, Visitor};
use serde::Deserialize;

/// serde_json's own error type, so that the values handed to serde_json fail through unchanged.
pub type Error = serde_json::Error;

/// The deepest nesting read: below serde_json's limit of 128, so that nothing serde_json refuses
/// for depth is accepted here.
pub const MAX_DEPTH: u32 = 100;

/// The name serde_json's `RawValue` asks for (`serde_json::value::RawValue`'s token).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// The name [`Spanned`] asks for.
const SPANNED_TOKEN: &str = "$jakguard::scan::Spanned";

/// A value read in place together with its raw JSON, in one scan: what a `RawValue` then a
/// second reading of its text give, for half the work (a draft order, whose JSON a dose update
/// sends back). Only this deserializer reads it; any other fails on it, so that a caller's
/// fallback reads the text in two steps instead.
#[derive(Debug)]
pub struct Spanned<'de, T> {
    pub value: T,
    pub raw: &'de serde_json::value::RawValue,
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for Spanned<'a, T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<'a, T>(std::marker::PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<'a, T> {
            type Value = Spanned<'a, T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value read by jakguard_fhir::scan")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // `value` then `raw`, as SpannedAccess gives them.
                let value = map
                    .next_entry::<IgnoredKey, T>()?
                    .ok_or_else(|| de::Error::custom("no value"))?
                    .1;
                let raw = map
                    .next_entry::<IgnoredKey, &'de serde_json::value::RawValue>()?
                    .ok_or_else(|| de::Error::custom("no raw value"))?
                    .1;
                Ok(Spanned { value, raw })
            }
        }
        d.deserialize_newtype_struct(SPANNED_TOKEN, SpannedVisitor(std::marker::PhantomData))
    }
}

/// A key whose text does not matter.
struct IgnoredKey;

impl<'de> Deserialize<'de> for IgnoredKey {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d).map(|_| IgnoredKey)
    }
}

/// Reads `T` from `text` (see the module's invariant). Trailing whitespace only is allowed.
pub fn from_str<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, Error> {
    let mut de = Deserializer {
        text,
        pos: 0,
        depth: 0,
    };
    let value = T::deserialize(&mut de)?;
    de.skip_ws();
    if de.pos != text.len() {
        return Err(fail("trailing characters"));
    }
    Ok(value)
}

#[cold]
fn fail(msg: &'static str) -> Error {
    de::Error::custom(msg)
}

const ONES: u64 = u64::MAX / 255;
const HIGH: u64 = ONES << 7;
const SPACES: u64 = ONES * 0x20;

/// Bit `8k + 7` set for every byte `k` of `chunk` that ends an unescaped run of string content:
/// `"`, `\` or a control character. Only the lowest set bit is exact, which is the one used.
#[inline(always)]
fn string_stops(chunk: u64) -> u64 {
    let ctrl = chunk.wrapping_sub(SPACES) & !chunk;
    let q = chunk ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = chunk ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (ctrl | quote | backslash) & HIGH
}

/// The eight bytes at `pos`, little-endian, when there are eight.
#[inline(always)]
fn chunk_at(b: &[u8], pos: usize) -> Option<u64> {
    let eight: [u8; 8] = b.get(pos..pos.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(eight))
}

/// How many bytes at the start of `bytes` may stand in a JSON string as they are: none of
/// `"`, `\` or a control character. Eight bytes at a time; shared with the response writer
/// (`jakguard_cds::json`), which escapes exactly these bytes.
#[inline]
pub fn plain_run(bytes: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(chunk) = chunk_at(bytes, pos) {
        let stops = string_stops(chunk);
        if stops != 0 {
            return pos + (stops.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    // The last bytes as one chunk padded with plain ones: most strings written are short
    // (keys, codes, labels), and a byte-by-byte search here cost more than the chunks.
    let tail = &bytes[pos..];
    let mut padded = [b'a'; 8];
    padded[..tail.len()].copy_from_slice(tail);
    let stops = string_stops(u64::from_le_bytes(padded));
    pos + ((stops.trailing_zeros() / 8) as usize).min(tail.len())
}

// The lexical layer: free functions from a position to the position after what they skip, so
// that the position stays in a register; `None` when the text is malformed there.

/// After JSON whitespace (space, tab, line feed, carriage return). Spaces are counted eight
/// bytes at a time, without a branch per byte: the indentation of a pretty-printed body is
/// half its bytes, and most tokens have no whitespace before them at all.
#[inline(always)]
fn after_ws(b: &[u8], mut pos: usize) -> usize {
    if !matches!(b.get(pos), Some(b' ' | b'\n' | b'\t' | b'\r')) {
        return pos;
    }
    loop {
        if let Some(chunk) = chunk_at(b, pos) {
            let not_spaces = chunk ^ SPACES;
            if not_spaces == 0 {
                pos += 8;
                continue;
            }
            pos += (not_spaces.trailing_zeros() / 8) as usize;
        }
        match b.get(pos) {
            Some(b' ' | b'\n' | b'\t' | b'\r') => pos += 1,
            _ => return pos,
        }
    }
}

/// With `pos` just after an opening quote: after the closing quote, and whether the string has
/// escapes. Escapes are checked and control characters refused as serde_json does (`\uXXXX`
/// is not checked for surrogates, as serde_json's skipping does not; its reading does, and
/// strings with escapes are read by serde_json).
#[inline(always)]
fn after_str(b: &[u8], mut pos: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        while let Some(chunk) = chunk_at(b, pos) {
            let stops = string_stops(chunk);
            if stops != 0 {
                pos += (stops.trailing_zeros() / 8) as usize;
                break;
            }
            pos += 8;
        }
        // The stop found above, or the last bytes of the text one at a time.
        match *b.get(pos)? {
            b'"' => return Some((pos + 1, escaped)),
            b'\\' => {
                escaped = true;
                pos = after_escape(b, pos)?;
            }
            0..=0x1f => return None,
            _ => pos += 1,
        }
    }
}

/// With `pos` on a backslash: after its escape.
fn after_escape(b: &[u8], pos: usize) -> Option<usize> {
    match *b.get(pos + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(pos + 2),
        b'u' if b.get(pos + 2..pos + 6)?.iter().all(u8::is_ascii_hexdigit) => Some(pos + 6),
        _ => None,
    }
}

/// After the digits at `pos`, and how many there were.
#[inline(always)]
fn after_digits(b: &[u8], mut pos: usize) -> (usize, usize) {
    let start = pos;
    while b.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    (pos, pos - start)
}

/// With `pos` on the first byte of a number: after it, by serde_json's grammar.
fn after_number(b: &[u8], mut pos: usize) -> Option<usize> {
    if b.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match *b.get(pos)? {
        b'0' => {
            pos += 1;
            if b.get(pos).is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
        b'1'..=b'9' => pos = after_digits(b, pos).0,
        _ => return None,
    }
    if b.get(pos) == Some(&b'.') {
        let (end, n) = after_digits(b, pos + 1);
        if n == 0 {
            return None;
        }
        pos = end;
    }
    if let Some(b'e' | b'E') = b.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = b.get(pos) {
            pos += 1;
        }
        let (end, n) = after_digits(b, pos);
        if n == 0 {
            return None;
        }
        pos = end;
    }
    Some(pos)
}

/// With `pos` on its first byte: after `word` (`null`, `true` or `false`).
#[inline(always)]
fn after_literal(b: &[u8], pos: usize, word: &[u8]) -> Option<usize> {
    b.get(pos..)?.starts_with(word).then_some(pos + word.len())
}

/// With `pos` where a member starts (after `{` or `,`): after its key, its colon and the
/// whitespace up to the value.
#[inline(always)]
fn after_key(b: &[u8], pos: usize) -> Option<usize> {
    let pos = after_ws(b, pos);
    if b.get(pos) != Some(&b'"') {
        return None;
    }
    let (pos, _) = after_str(b, pos + 1)?;
    let pos = after_ws(b, pos);
    (b.get(pos) == Some(&b':')).then(|| after_ws(b, pos + 1))
}

/// After one value, checked as serde_json's `ignore_value` checks it, nested at most
/// `max_open` deep. One loop; the open brackets are the bits of `stack`, 1 for an object.
fn after_value(b: &[u8], mut pos: usize, max_open: u32) -> Option<usize> {
    let mut stack: u128 = 0;
    let mut open: u32 = 0;
    loop {
        // A value is expected.
        pos = after_ws(b, pos);
        match *b.get(pos)? {
            b'"' => pos = after_str(b, pos + 1)?.0,
            c @ (b'{' | b'[') => {
                if open >= max_open {
                    return None;
                }
                stack = (stack << 1) | u128::from(c == b'{');
                open += 1;
                pos = after_ws(b, pos + 1);
                // `{` + 2 is `}`, `[` + 2 is `]`.
                if b.get(pos) != Some(&(c + 2)) {
                    if c == b'{' {
                        pos = after_key(b, pos)?;
                    }
                    continue;
                }
                // Empty: closed below.
            }
            b'n' => pos = after_literal(b, pos, b"null")?,
            b't' => pos = after_literal(b, pos, b"true")?,
            b'f' => pos = after_literal(b, pos, b"false")?,
            b'-' | b'0'..=b'9' => pos = after_number(b, pos)?,
            _ => return None,
        }
        // After a value (or on the closing bracket of an empty one): close what ends here.
        loop {
            if open == 0 {
                return Some(pos);
            }
            let in_object = stack & 1 == 1;
            pos = after_ws(b, pos);
            match *b.get(pos)? {
                b',' => {
                    pos += 1;
                    if in_object {
                        pos = after_key(b, pos)?;
                    }
                    break;
                }
                b'}' if in_object => {}
                b']' if !in_object => {}
                _ => return None,
            }
            pos += 1;
            stack >>= 1;
            open -= 1;
        }
    }
}

pub struct Deserializer<'de> {
    text: &'de str,
    pos: usize,
    depth: u32,
}

impl<'de> Deserializer<'de> {
    #[inline(always)]
    fn bytes(&self) -> &'de [u8] {
        self.text.as_bytes()
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        self.pos = after_ws(self.bytes(), self.pos);
    }

    /// Skips whitespace and returns the next byte, or fails at the end of the text.
    #[inline(always)]
    fn next_token(&mut self) -> Result<u8, Error> {
        self.skip_ws();
        self.peek()
            .ok_or_else(|| fail("unexpected end of the text"))
    }

    /// Skips one value (see [`after_value`]), within [`MAX_DEPTH`] with what is open around it.
    fn skip_value(&mut self) -> Result<(), Error> {
        let max_open = MAX_DEPTH.saturating_sub(self.depth);
        self.pos =
            after_value(self.bytes(), self.pos, max_open).ok_or_else(|| fail("malformed JSON"))?;
        Ok(())
    }

    /// With `pos` on `null`, eats it.
    fn skip_null(&mut self) -> Result<(), Error> {
        self.pos = after_literal(self.bytes(), self.pos, b"null")
            .ok_or_else(|| fail("invalid literal"))?;
        Ok(())
    }

    /// The span of the next value, skipped; for serde_json to read.
    fn value_span(&mut self) -> Result<&'de str, Error> {
        self.skip_ws();
        let start = self.pos;
        self.skip_value()?;
        self.text
            .get(start..self.pos)
            .ok_or_else(|| fail("not on a character boundary"))
    }

    /// Hands the next value to serde_json: `read` makes the same request of it.
    fn hand_over<T>(
        &mut self,
        read: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
        ) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let span = self.value_span()?;
        let mut json = serde_json::Deserializer::from_str(span);
        let value = read(&mut json)?;
        json.end()?;
        Ok(value)
    }

    /// A string without escapes, borrowed; `None` (nothing consumed) when it has escapes, for
    /// serde_json to decode.
    #[inline(always)]
    fn plain_str(&mut self) -> Result<Option<&'de str>, Error> {
        if self.next_token()? != b'"' {
            return Err(fail("expected a string"));
        }
        let start = self.pos;
        let (end, escaped) =
            after_str(self.bytes(), start + 1).ok_or_else(|| fail("malformed string"))?;
        if escaped {
            return Ok(None);
        }
        self.pos = end;
        self.text
            .get(start + 1..end - 1)
            .map(Some)
            .ok_or_else(|| fail("not on a character boundary"))
    }

    fn enter(&mut self) -> Result<(), Error> {
        if self.depth >= MAX_DEPTH {
            return Err(fail("nested too deeply"));
        }
        self.depth += 1;
        self.pos += 1;
        Ok(())
    }

    fn read_map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        self.read_members(|access| visitor.visit_map(access))
    }

    fn read_seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        self.read_members(|access| visitor.visit_seq(access))
    }

    /// An object's or an array's members, from its opening bracket, by `visit`.
    #[inline(always)]
    fn read_members<T>(
        &mut self,
        visit: impl FnOnce(&mut Access<'_, 'de>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.enter()?;
        let mut access = Access {
            de: self,
            first: true,
            done: false,
        };
        let value = visit(&mut access)?;
        if !access.done {
            // The visitor stopped early; serde_json refuses what is left.
            return Err(fail("an object or array was not read to its end"));
        }
        self.depth -= 1;
        Ok(value)
    }
}

/// Forwards each listed method to serde_json on the value's span.
macro_rules! hand_over {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(
                self,
                $($arg: $ty,)*
                visitor: V,
            ) -> Result<V::Value, Error> {
                self.hand_over(|json| de::Deserializer::$method(json, $($arg,)* visitor))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.next_token()? {
            b'{' => self.read_map(visitor),
            b'[' => self.read_seq(visitor),
            b'"' => match self.plain_str()? {
                Some(s) => visitor.visit_borrowed_str(s),
                None => self.hand_over(|json| de::Deserializer::deserialize_any(json, visitor)),
            },
            _ => self.hand_over(|json| de::Deserializer::deserialize_any(json, visitor)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.next_token()? == b'n' {
            self.skip_null()?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.plain_str()? {
            Some(s) => visitor.visit_borrowed_str(s),
            None => self.hand_over(|json| de::Deserializer::deserialize_str(json, visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.next_token()? {
            b'{' => self.read_map(visitor),
            _ => Err(fail("expected an object")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // serde_json also reads a struct from an array; that is refused here (and read there).
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.next_token()? {
            b'[' => self.read_seq(visitor),
            _ => Err(fail("expected an array")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.skip_value()?;
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == RAW_VALUE_TOKEN {
            // serde_json would scan the span once more to find it: it is already found.
            let span = self.value_span()?;
            return visitor.visit_map(RawSpan(Some(span)));
        }
        if name == SPANNED_TOKEN {
            self.skip_ws();
            let start = self.pos;
            return visitor.visit_map(SpannedAccess {
                de: self,
                start,
                step: 0,
            });
        }
        visitor.visit_newtype_struct(self)
    }

    hand_over! {
        deserialize_bool(),
        deserialize_i8(), deserialize_i16(), deserialize_i32(), deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(), deserialize_u16(), deserialize_u32(), deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(), deserialize_f64(),
        deserialize_char(),
        deserialize_bytes(), deserialize_byte_buf(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }
}

/// An object's or an array's members, as serde asks for them.
struct Access<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    first: bool,
    /// The closing bracket was eaten.
    done: bool,
}

impl<'de> Access<'_, 'de> {
    /// Before a member: `true` when there is one (after its comma), `false` (the bracket eaten)
    /// at the end. An end may follow `[`, `{` or a member, never a comma.
    #[inline(always)]
    fn has_next(&mut self, close: u8) -> Result<bool, Error> {
        let b = self.de.bytes();
        let mut pos = after_ws(b, self.de.pos);
        let c = b.get(pos).copied();
        if c == Some(close) {
            self.de.pos = pos + 1;
            self.done = true;
            return Ok(false);
        }
        if !self.first {
            if c != Some(b',') {
                return Err(fail("expected a comma or the end"));
            }
            pos += 1;
        }
        self.first = false;
        self.de.pos = pos;
        Ok(true)
    }
}

impl<'de> de::MapAccess<'de> for &mut Access<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.done || !self.has_next(b'}')? {
            return Ok(None);
        }
        // The key, its colon and the whitespace around them, in one go.
        let (b, text) = (self.de.bytes(), self.de.text);
        let pos = after_ws(b, self.de.pos);
        if b.get(pos) != Some(&b'"') {
            return Err(fail("a key must be a string"));
        }
        let (end, escaped) = after_str(b, pos + 1).ok_or_else(|| fail("malformed key"))?;
        // A key with escapes is refused: serde_json decodes it into a scratch buffer, and which
        // visitor method it then calls differs by key type.
        if escaped {
            return Err(fail("a key with escapes"));
        }
        let key = text
            .get(pos + 1..end - 1)
            .ok_or_else(|| fail("not on a character boundary"))?;
        let colon = after_ws(b, end);
        if b.get(colon) != Some(&b':') {
            return Err(fail("expected a colon"));
        }
        self.de.pos = colon + 1;
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.de)
    }
}

impl<'de> de::SeqAccess<'de> for &mut Access<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.done || !self.has_next(b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

/// A `RawValue`'s span, handed to its visitor as serde_json's own deserializer hands it: one
/// entry, the token as key and the text as a borrowed string. Were that protocol ever to
/// change, `RawValue`s would be refused here (and every body read by the fallback), never
/// misread: the tests below and the one-pass tests of the fixtures would fail.
struct RawSpan<'de>(Option<&'de str>);

impl<'de> de::MapAccess<'de> for RawSpan<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.0.is_none() {
            return Ok(None);
        }
        seed.deserialize(de::value::BorrowedStrDeserializer::new(RAW_VALUE_TOKEN))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let span = self
            .0
            .take()
            .ok_or_else(|| fail("a raw value read twice"))?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(span))
    }
}

/// [`Spanned`]'s two entries: `value`, read where the deserializer stands, then `raw`, the
/// text that reading went over.
struct SpannedAccess<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    start: usize,
    step: u8,
}

impl<'de> de::MapAccess<'de> for SpannedAccess<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let key = match self.step {
            0 => "value",
            1 => "raw",
            _ => return Ok(None),
        };
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        self.step += 1;
        if self.step == 1 {
            return seed.deserialize(&mut *self.de);
        }
        let span = self
            .de
            .text
            .get(self.start..self.de.pos)
            .ok_or_else(|| fail("not on a character boundary"))?;
        seed.deserialize(SpanAsRaw(span))
    }
}

/// A span that can only be read as a `RawValue`.
struct SpanAsRaw<'de>(&'de str);

impl<'de> de::Deserializer<'de> for SpanAsRaw<'de> {
    type Error = Error;

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name != RAW_VALUE_TOKEN {
            return Err(fail("a span read as something else than a RawValue"));
        }
        visitor.visit_map(RawSpan(Some(self.0)))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(fail("a span read as something else than a RawValue"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A key without escapes. Read as a string (what serde_json's keys give every string-like
/// request) or skipped; any other request (a number from a key...) is refused.
struct Key<'de>(&'de str);

impl<'de> de::Deserializer<'de> for Key<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(fail("a key read as something else than a string"))
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde::de::IgnoredAny;
    use serde_json::value::RawValue;
    use serde_json::Value;

    use super::*;

    /// Every text this deserializer reads, serde_json reads to the same value; `must_read`
    /// says it is also read here (a well-formed text this deserializer gave up on would cost
    /// the fallback, and hide a bug behind it).
    fn agrees(text: &str, must_read: bool) {
        let json = serde_json::from_str::<Value>(text);
        match from_str::<Value>(text) {
            Ok(v) => assert_eq!(json.ok(), Some(v), "{text:?}"),
            Err(e) => assert!(!must_read, "{text:?} not read: {e}"),
        }
        if from_str::<IgnoredAny>(text).is_ok() {
            assert!(
                serde_json::from_str::<IgnoredAny>(text).is_ok(),
                "{text:?} skipped here, refused by serde_json"
            );
        } else {
            assert!(!must_read, "{text:?} not skipped");
        }
    }

    #[test]
    fn well_formed_texts_read_as_serde_json_reads_them() {
        let cases = [
            "null",
            " true ",
            "false",
            "0",
            "-0",
            "-0.0",
            "12",
            "-12.5e-3",
            "1E+2",
            "0.1",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "1.7976931348623157e308",
            "5e-324",
            "123456789012345678901234567890",
            r#""""#,
            r#""plain""#,
            r#""caf\u00e9 \" \\ \/ \b\f\n\r\t""#,
            r#""\ud83d\ude00""#,
            "\"été\u{1F600}\"",
            "[]",
            "[ ]",
            "{}",
            "{ }",
            "[1, [2, [3, {}]], {\"a\": []}]",
            "{\"a\": {\"b\": {\"c\": [null, true, false, \"x\", 1.5]}}}",
            "{\"a\":1,\"a\":2}",
            "\n\t\r {\"k\" \n:\r\n \"v\"\t}\n  ",
            &format!("{{\"a\":{}1{}}}", "[".repeat(99), "]".repeat(99)),
            &format!("{{\"text\": \"{}\"}}", "x".repeat(1000)),
            &format!("{{{}\"k\": 1}}", " ".repeat(1000)),
        ];
        for text in cases {
            agrees(text, true);
        }
    }

    #[test]
    fn malformed_texts_are_refused_as_serde_json_refuses_them() {
        let cases = [
            "",
            " ",
            "nul",
            "nulll",
            "True",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "0x10",
            "1.5.2",
            "\"unterminated",
            "\"a\u{1}b\"",
            "\"tab\tinside\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":}",
            "{1:2}",
            "[1}",
            "{\"a\":1]",
            "[",
            "{",
            "[1] [2]",
            "{} x",
            &format!("{}1{}", "[".repeat(101), "]".repeat(101)),
            &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        ];
        for text in cases {
            agrees(text, false);
            assert!(from_str::<IgnoredAny>(text).is_err(), "{text:?} accepted");
        }
        // A lone surrogate is skipped by both, and refused by both when read.
        agrees(r#""\ud800""#, false);
        assert!(from_str::<Value>(r#""\ud800""#).is_err());
        assert!(from_str::<IgnoredAny>(r#""\ud800""#).is_ok());
    }

    // Compared through Debug, which the dead-code lint does not count as a read.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Shape<'a> {
        #[serde(borrow)]
        name: Option<Cow<'a, str>>,
        value: Option<f64>,
        count: Option<u32>,
        flag: Option<bool>,
        #[serde(borrow)]
        raw: Option<&'a RawValue>,
        boxed: Option<Box<RawValue>>,
        #[serde(borrow, default)]
        list: Vec<Shape<'a>>,
    }

    fn borrowed(s: &Shape<'_>) -> Vec<bool> {
        let mut out = vec![matches!(s.name, Some(Cow::Borrowed(_)))];
        out.extend(s.list.iter().flat_map(borrowed));
        out
    }

    #[test]
    fn typed_reads_give_serde_json_values_borrowing_alike() {
        let cases = [
            r#"{"name": "a", "value": 0.1, "count": 3, "flag": true, "raw": {"x": [1, "y"]}}"#,
            r#"{"name": "caf\u00e9", "value": 1e-7, "list": [{"name": "b", "raw": 12.50}]}"#,
            r#"{"name": null, "value": null, "raw": null, "unknown": {"deep": [[{}]]}}"#,
            r#"{"value": 3, "count": 4294967295, "list": []}"#,
            r#"{"raw": "  text  ", "name": "a\"b", "boxed": [ 1 , {"k": "\u00e9"} ]}"#,
            "{\"raw\":\n  [1,\n   2] ,\"boxed\":true}",
        ];
        for text in cases {
            let ours: Shape = from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let theirs: Shape = serde_json::from_str(text).unwrap();
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{text}");
            assert_eq!(borrowed(&ours), borrowed(&theirs), "{text}");
        }
        // A wrong type, an out-of-range number, a repeated field: refused by both.
        for text in [
            r#"{"count": -1}"#,
            r#"{"count": 1.5}"#,
            r#"{"value": "1.5"}"#,
            r#"{"name": 1}"#,
            r#"{"flag": 1}"#,
            r#"{"value": 1e400}"#,
            r#"{"name": "a", "name": "b"}"#,
            r#"{"list": {}}"#,
        ] {
            assert!(from_str::<Shape>(text).is_err(), "{text}");
            assert!(serde_json::from_str::<Shape>(text).is_err(), "{text}");
        }
    }

    /// Every length up to 24, with one byte that must be escaped at every position (or none),
    /// against a byte-by-byte search.
    #[test]
    fn plain_run_ends_at_the_first_byte_a_string_cannot_hold_as_it_is() {
        for len in 0..=24 {
            for stop_at in 0..=len {
                for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    for filler in [b'a', b' ', 0x7f, 0xc3] {
                        let mut bytes = vec![filler; len];
                        if stop_at < len {
                            bytes[stop_at] = stop;
                        }
                        let naive = bytes
                            .iter()
                            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                            .unwrap_or(len);
                        assert_eq!(plain_run(&bytes), naive, "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn keys_with_escapes_and_structs_as_arrays_are_left_to_serde_json() {
        for text in [
            r#"{"n\u0061me": "a"}"#,
            r#"["a", 1.0, 2, true, null, null, []]"#,
        ] {
            assert!(from_str::<Shape>(text).is_err(), "{text}");
            assert!(serde_json::from_str::<Shape>(text).is_ok(), "{text}");
        }
    }

    /// A spanned value is the value `from_str` reads and the raw text serde_json's `RawValue`
    /// takes, whitespace and all; serde_json itself refuses it (its callers fall back).
    #[test]
    fn a_spanned_value_is_its_reading_and_its_raw_text() {
        #[derive(Deserialize)]
        struct Outer<'a> {
            #[serde(borrow)]
            items: Vec<Option<Spanned<'a, Shape<'a>>>>,
        }
        #[derive(Deserialize)]
        struct Raws<'a> {
            #[serde(borrow)]
            items: Vec<Option<&'a RawValue>>,
        }
        let text = "{\"items\": [ {\"name\": \"a\",\n \"value\": 1.50, \"list\": [{\"name\": \"b\"}]} , null,\n\t{\"raw\": [1, {\"x\": \"\\u00e9\"}]}\n]}";
        let ours: Outer = from_str(text).unwrap();
        let raws: Raws = serde_json::from_str(text).unwrap();
        assert_eq!(ours.items.len(), raws.items.len());
        for (spanned, raw) in ours.items.iter().zip(&raws.items) {
            match (spanned, raw) {
                (Some(s), Some(r)) => {
                    assert_eq!(s.raw.get(), r.get());
                    let again: Shape = serde_json::from_str(r.get()).unwrap();
                    assert_eq!(format!("{:?}", s.value), format!("{again:?}"));
                }
                (None, None) => {}
                _ => panic!("{text}"),
            }
        }
        assert!(serde_json::from_str::<Outer>(text).is_err());
        // A malformed value fails the reading, as it would fail `from_str` of its text.
        assert!(from_str::<Outer>(r#"{"items": [{"name": 1}]}"#).is_err());
    }

    /// A small seedable generator (xorshift64*), so that a failure names its case.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
        }
    }

    fn fixtures() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .expect("fixtures/requests")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let name = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                (name, std::fs::read_to_string(p).expect("a fixture"))
            })
            .collect();
        out.sort();
        out
    }

    /// Bytes that change what JSON means, for the mutations below.
    const SIGNIFICANT: &[u8] = b"\"\\{}[],:0123456789-+.eEntfulrsa \t\n\r\x01\x1f";

    /// Every fixture (pretty-printed and compact), then thousands of byte-level mutations of
    /// them: whatever this deserializer reads, serde_json reads alike, as a generic value, as
    /// a skipped one and as the one-pass reading of every prefetch value.
    #[test]
    fn mutated_fixtures_never_read_differently_from_serde_json() {
        let mut rng = Rng(2026);
        let mut read = 0;
        for (name, text) in fixtures() {
            let value: Value = serde_json::from_str(&text).expect("a fixture is JSON");
            let compact = serde_json::to_string(&value).expect("JSON");
            agrees(&text, true);
            agrees(&compact, true);
            for base in [&text, &compact] {
                for _ in 0..150 {
                    let mut bytes = base.as_bytes().to_vec();
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(bytes.len());
                        match rng.below(3) {
                            0 => bytes[at] = SIGNIFICANT[rng.below(SIGNIFICANT.len())],
                            1 => {
                                bytes.remove(at);
                            }
                            _ => bytes.insert(at, SIGNIFICANT[rng.below(SIGNIFICANT.len())]),
                        }
                    }
                    let Ok(mutated) = std::str::from_utf8(&bytes) else {
                        continue;
                    };
                    agrees(mutated, false);
                    read += usize::from(from_str::<IgnoredAny>(mutated).is_ok());
                }
            }
            for prefetched in value["prefetch"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                let pretty = serde_json::to_string_pretty(prefetched).expect("JSON");
                let ours = crate::lenient::parse_one_pass::<crate::InPlace>(&pretty);
                let theirs = crate::lenient::parse_strict::<crate::InPlace>(&pretty);
                match (ours, theirs) {
                    (Ok(ours), Ok(theirs)) => {
                        assert_eq!(format!("{:?}", ours.0), format!("{:?}", theirs.0), "{name}")
                    }
                    (Ok(_), Err(e)) => panic!("{name}: read here, refused by serde_json: {e}"),
                    // Only the fixture that is malformed on purpose may be left to the fallback
                    // (serde_json reads a struct written as an array; this deserializer
                    // refuses it).
                    (Err(e), Ok(_)) => assert!(name.contains("malformed"), "{name}: {e}"),
                    (Err(_), Err(_)) => {}
                }
            }
        }
        // Some mutations stay well formed (a digit for a digit, a space for a space): the
        // comparison above was not only of refusals.
        assert!(read > 500, "only {read} mutated texts were read");
    }
}
