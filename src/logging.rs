//! The JSON log lines of `jakguard serve`, written without going through `serde_json::Value`.
//!
//! tracing-subscriber's own JSON formatter was most of the cost of logging a request
//! (callgrind, the fixture requests: ~32k instructions per line, ~6k when the request's span is
//! created, ~8.5k when its hookInstance is recorded). It stores a span's fields as a JSON
//! object in a string, so it parses that string back into `serde_json::Value`s on every line
//! that shows the span and on every `Span::record`, and it goes through a map of values to
//! write them.
//!
//! Here a span's fields are stored once as a ready-to-splice JSON fragment (`"a":1,"b":"x"`, no
//! braces) that each line copies as it is; `Span::record` writes the new entry into it at its
//! place (found by scanning the entries' boundaries, never by reading values back). Lines keep
//! the shape tracing-subscriber's formatter gives them (`json()`, `with_span_list(false)`),
//! byte for byte except the timestamp's value, so that whatever reads the logs sees no change:
//! the tests below format the same events with both and compare. The one difference is a bug
//! of tracing-subscriber's not reproduced: it drops fields recorded later on a span one of
//! whose field names needed escaping.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// One JSON object per event and line: `timestamp`, `level`, `fields` (the message and the
/// event's fields, in the order they were given), `target`, and `span` (the current span's
/// fields and its `name`) when there is a current span. Use with [`JsonSpanFields`].
pub struct JsonLines;

/// Stores a span's fields as the JSON fragment [`JsonLines`] splices into each line.
///
/// The fragment's entries are kept sorted by field name, a field recorded again replaces its
/// value, and debug fields named `log.*` are left out: tracing-subscriber's formatter keeps a
/// span's fields in a `BTreeMap` and skips those, and the lines must not change.
pub struct JsonSpanFields;

impl<S> FormatEvent<S, JsonSpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // The line is built in a `String` of its own and handed over whole: the writer is a
        // `dyn fmt::Write`, and the few dozen small writes a line takes cost several times more
        // through it than a `String`'s inlined pushes.
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        write_timestamp(&mut line, SystemTime::now())?;
        line.push_str("\",\"level\":\"");
        line.push_str(level_name(meta.level()));
        line.push_str("\",\"fields\":{");
        let mut fields = EventFields {
            out: &mut line,
            first: true,
            result: Ok(()),
            from_log: is_from_log(meta),
            log_target: None,
        };
        event.record(&mut fields);
        fields.result?;
        // Records of the `log` crate (through tracing-log) come with target `log`; like
        // tracing-subscriber, name the target the record gave.
        let log_target = fields.log_target;
        let target = log_target.as_deref().unwrap_or(meta.target());
        line.push_str("},\"target\":");
        write_json_string(&mut line, target)?;
        // An explicit parent first, then the current span, as tracing-subscriber chooses.
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            line.push_str(",\"span\":{");
            let extensions = span.extensions();
            if let Some(stored) = extensions.get::<FormattedFields<JsonSpanFields>>() {
                if !stored.fields.is_empty() {
                    line.push_str(&stored.fields);
                    line.push(',');
                }
            }
            line.push_str("\"name\":");
            write_json_string(&mut line, span.metadata().name())?;
            line.push('}');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        // The writer can only be written to, and keeping the entries sorted needs to read what
        // is already there: build the fragment, then hand it over.
        let mut fragment = String::with_capacity(128);
        fields.record(&mut SpanFields {
            fragment: &mut fragment,
        });
        writer.write_str(&fragment)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        fields.record(&mut SpanFields {
            fragment: &mut current.fields,
        });
        Ok(())
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// Whether the event is a record of the `log` crate that tracing-log forwarded: its callsite's
/// metadata is named `log event`, has target `log` and a `log.target` field.
fn is_from_log(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "log"
        && meta.name() == "log event"
        && meta.fields().field("log.target").is_some()
}

/// Writes an event's fields as JSON entries, in the order the event gives them, as
/// tracing-serde does (duplicates included, names as they are).
struct EventFields<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
    /// Whether the event is a record of the `log` crate, whose `log.target` field names the
    /// line's target (kept in `log_target`).
    from_log: bool,
    log_target: Option<String>,
}

impl<W: fmt::Write> EventFields<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !self.first {
                self.out.write_char(',')?;
            }
            self.first = false;
            write_json_string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for EventFields<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |w| write_f64(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write_i64(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write_u64(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.from_log && field.name() == "log.target" {
            self.log_target = Some(value.to_owned());
        }
        self.entry(field, |w| write_json_string(w, value));
    }

    // Every other kind of value (u128, i128, bytes, errors) arrives here by tracing's default
    // methods, as it does in tracing-serde: as the string of its Debug form.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| write_json_debug(w, value));
    }
}

/// Adds fields to a span's stored fragment, keeping its entries sorted by name and unique, as
/// tracing-subscriber's `JsonFields` does (through a `BTreeMap`).
struct SpanFields<'a> {
    fragment: &'a mut String,
}

impl SpanFields<'_> {
    fn put(&mut self, name: &str, value: impl FnOnce(&mut String) -> fmt::Result) {
        let fragment = &mut *self.fragment;
        // A field whose Debug form fails is left out rather than leaving a broken fragment that
        // every later line of the span would carry.
        match slot(fragment, name) {
            Slot::End => {
                let old = fragment.len();
                if old > 0 {
                    fragment.push(',');
                }
                if write_entry(fragment, name, value).is_err() {
                    fragment.truncate(old);
                }
            }
            Slot::Before(at) => {
                let mut entry = String::with_capacity(64);
                if write_entry(&mut entry, name, value).is_ok() {
                    entry.push(',');
                    fragment.insert_str(at, &entry);
                }
            }
            Slot::Replace(range) => {
                let mut entry = String::with_capacity(64);
                if write_entry(&mut entry, name, value).is_ok() {
                    fragment.replace_range(range, &entry);
                }
            }
        }
    }
}

impl Visit for SpanFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field.name(), |w| write_f64(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), |w| write_i64(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), |w| write_u64(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), |w| {
            w.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), |w| write_json_string(w, value));
    }

    // `JsonFields` makes bytes an array of numbers (events make them a hex string).
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put(field.name(), |w| {
            w.write_char('[')?;
            for (i, b) in value.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write_u64(w, u64::from(*b))?;
            }
            w.write_char(']')
        });
    }

    // Also u128, i128 and errors, by tracing's default methods. Like `JsonFields`: `log.*`
    // fields (tracing-log's metadata) are skipped, and a raw identifier loses its `r#`.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.put(name, |w| write_json_debug(w, value));
    }
}

fn write_entry(
    out: &mut String,
    name: &str,
    value: impl FnOnce(&mut String) -> fmt::Result,
) -> fmt::Result {
    write_json_string(out, name)?;
    out.push(':');
    value(out)
}

/// Where a field goes in a sorted fragment.
#[derive(Debug, PartialEq)]
enum Slot {
    End,
    /// Before the entry starting at this byte.
    Before(usize),
    /// In place of the entry at these bytes, which has the same name.
    Replace(Range<usize>),
}

fn slot(fragment: &str, name: &str) -> Slot {
    for (key, entry) in entries(fragment.as_bytes()) {
        match unescape(&fragment.as_bytes()[key])
            .as_ref()
            .cmp(name.as_bytes())
        {
            Ordering::Less => {}
            Ordering::Equal => return Slot::Replace(entry),
            Ordering::Greater => return Slot::Before(entry.start),
        }
    }
    Slot::End
}

/// The entries of a fragment this module wrote: for each, the bytes of its name (escaped,
/// without quotes) and of the whole entry. Only finds the boundaries, which is all a sorted
/// insertion needs: values are strings, numbers, `true`, `false`, `null` or arrays of numbers,
/// and a string's quotes and backslashes inside are always escaped.
fn entries(fragment: &[u8]) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= fragment.len() {
            return None;
        }
        let start = pos;
        let key_end = string_end(fragment, start + 1);
        let value = (key_end + 2).min(fragment.len()); // past the closing quote and the colon
        let end = match fragment.get(value) {
            Some(b'"') => (string_end(fragment, value + 1) + 1).min(fragment.len()),
            Some(b'[') => (value + find(&fragment[value..], b']') + 1).min(fragment.len()),
            _ => value + find(&fragment[value..], b','),
        };
        pos = end + 1; // past the comma
        Some((start + 1..key_end, start..end))
    })
}

/// The index of the quote closing the string whose contents start at `i` (the length if there
/// is none, which this module never writes: a logging bug must not panic the service).
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    while let Some(offset) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'"' || b == b'\\'))
    {
        i += offset;
        if bytes[i] == b'"' {
            return i;
        }
        i += 2; // the backslash and the character it escapes
    }
    bytes.len()
}

/// The index of the first `byte`, or the length.
fn find(bytes: &[u8], byte: u8) -> usize {
    bytes.iter().position(|&b| b == byte).unwrap_or(bytes.len())
}

/// The bytes of a name this module escaped. Names almost never need escaping, so this almost
/// never allocates; the escapes are only those [`write_json_str_contents`] writes.
fn unescape(escaped: &[u8]) -> Cow<'_, [u8]> {
    if !escaped.contains(&b'\\') {
        return Cow::Borrowed(escaped);
    }
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        if escaped[i] != b'\\' {
            out.push(escaped[i]);
            i += 1;
            continue;
        }
        let (byte, len) = match escaped.get(i + 1).copied().unwrap_or(b'\\') {
            b'b' => (0x08, 2),
            b't' => (b'\t', 2),
            b'n' => (b'\n', 2),
            b'f' => (0x0c, 2),
            b'r' => (b'\r', 2),
            b'u' => {
                // Only ever \u00XX, for a control character.
                let hex = escaped.get(i + 4..i + 6).unwrap_or(b"00");
                let hex = std::str::from_utf8(hex).unwrap_or("00");
                (u8::from_str_radix(hex, 16).unwrap_or(0), 6)
            }
            other => (other, 2), // \" and \\
        };
        out.push(byte);
        i += len;
    }
    Cow::Owned(out)
}

/// Integers digit by digit: `write!` costs several times more, and a line has several.
fn write_u64<W: fmt::Write + ?Sized>(out: &mut W, mut n: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.write_str(std::str::from_utf8(&digits[start..]).map_err(|_| fmt::Error)?)
}

fn write_i64<W: fmt::Write + ?Sized>(out: &mut W, n: i64) -> fmt::Result {
    if n < 0 {
        out.write_char('-')?;
    }
    write_u64(out, n.unsigned_abs())
}

/// Numbers as serde_json writes them; NaN and the infinities, which JSON lacks, as `null`
/// (what tracing-subscriber writes too).
fn write_f64<W: fmt::Write + ?Sized>(out: &mut W, value: f64) -> fmt::Result {
    match serde_json::Number::from_f64(value) {
        Some(n) => write!(out, "{n}"),
        None => out.write_str("null"),
    }
}

fn write_json_debug<W: fmt::Write + ?Sized>(out: &mut W, value: &dyn fmt::Debug) -> fmt::Result {
    out.write_char('"')?;
    write!(Escaping(out), "{value:?}")?;
    out.write_char('"')
}

fn write_json_string<W: fmt::Write + ?Sized>(out: &mut W, s: &str) -> fmt::Result {
    out.write_char('"')?;
    write_json_str_contents(out, s)?;
    out.write_char('"')
}

/// Escapes what goes through it as the inside of a JSON string, so that a Debug form is
/// escaped as it is written, without a `String` of its own.
struct Escaping<'a, W: ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_json_str_contents(self.0, s)
    }
}

/// The escapes of the control characters, as serde_json writes them: the short ones where JSON
/// has one, `\u00XX` (lowercase) for the others.
const CONTROL_ESCAPES: [&str; 32] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b",
    "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012",
    "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a",
    "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// Writes `s` escaped for the inside of a JSON string: quotes, backslashes and the control
/// characters U+0000 to U+001F; everything else (U+007F and beyond included) as it is, as
/// serde_json does. The runs in between are written whole.
fn write_json_str_contents<W: fmt::Write + ?Sized>(out: &mut W, s: &str) -> fmt::Result {
    let bytes = s.as_bytes();
    // Nearly every string needs no escape: one pass that the compiler can do 16 bytes at a time
    // (no early exit), then one write.
    let clean = !bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if clean {
        return out.write_str(s);
    }
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0..=0x1f => CONTROL_ESCAPES[b as usize],
            _ => continue,
        };
        // Every byte escaped is ASCII, so `i` is on a character boundary.
        if run < i {
            out.write_str(&s[run..i])?;
        }
        out.write_str(escape)?;
        run = i + 1;
    }
    if run < bytes.len() {
        out.write_str(&s[run..])?;
    }
    Ok(())
}

/// RFC 3339 in UTC with microseconds, `2026-12-02T00:24:09.841254Z`, as tracing-subscriber's
/// default timer writes it (also for the years it writes differently: `+10000`, `-0001`).
fn write_timestamp<W: fmt::Write + ?Sized>(out: &mut W, time: SystemTime) -> fmt::Result {
    let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-(d.as_secs() as i64), 0),
                n => (-(d.as_secs() as i64) - 1, 1_000_000_000 - n),
            }
        }
    };
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let second_of_day = secs.rem_euclid(86_400) as u32;
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    let micros = nanos / 1_000;
    if !(0..=9999).contains(&year) {
        if year > 9999 {
            write!(out, "+{year}")?;
        } else {
            write!(out, "{year:05}")?;
        }
        return write!(
            out,
            "-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
        );
    }
    // The common case, digit by digit: `write!` with widths costs more than the rest.
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut buf[0..4], year as u32);
    put_digits(&mut buf[5..7], month);
    put_digits(&mut buf[8..10], day);
    put_digits(&mut buf[11..13], hour);
    put_digits(&mut buf[14..16], minute);
    put_digits(&mut buf[17..19], second);
    put_digits(&mut buf[20..26], micros);
    out.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
}

/// Writes the last `digits.len()` decimal digits of `n`, zero-padded.
fn put_digits(digits: &mut [u8], mut n: u32) {
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The date of a day counted from 1970-01-01, as `(year, month, day)`: the rules crate's
/// conversion (Howard Hinnant's `civil_from_days`), not a second copy of it.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let d = jakguard_rules::Date::from_days_since_epoch(days);
    (i64::from(d.year), u32::from(d.month), u32::from(d.day))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing::field::Empty;
    use tracing::level_filters::LevelFilter;
    use tracing::{debug, error, info, info_span, trace, warn};
    use tracing_subscriber::fmt::MakeWriter;

    /// An in-memory writer the subscribers under test write their lines to.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .expect("the log is UTF-8")
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// The lines tracing-subscriber's JSON formatter writes for `emit`, configured as
    /// `init_tracing` configured it before this module.
    fn reference_lines(emit: fn()) -> Vec<String> {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(LevelFilter::TRACE)
            .with_writer(out.clone())
            .json()
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        out.lines()
    }

    /// The lines this module's formatter writes for `emit`, configured as `init_tracing` does.
    fn our_lines(emit: fn()) -> Vec<String> {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(LevelFilter::TRACE)
            .with_writer(out.clone())
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        out.lines()
    }

    /// The line with its timestamp's value replaced by `T`, after checking that the line
    /// starts with a timestamp in the expected form.
    fn without_timestamp(line: &str) -> String {
        let rest = line
            .strip_prefix("{\"timestamp\":\"")
            .unwrap_or_else(|| panic!("no timestamp first: {line}"));
        let (timestamp, rest) = rest.split_at(27);
        assert!(
            is_rfc3339_micros(timestamp),
            "timestamp `{timestamp}` in {line}"
        );
        format!("{{\"timestamp\":\"T{rest}")
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    fn is_rfc3339_micros(s: &str) -> bool {
        let pattern = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
        s.len() == pattern.len()
            && s.bytes().zip(pattern).all(|(c, &p)| match p {
                b'd' => c.is_ascii_digit(),
                p => c == p,
            })
    }

    /// For each case, runs `emit` under both formatters and checks that every line of ours
    /// parses as JSON, equals tracing-subscriber's line as JSON, and has the same text (so the
    /// same key order), the timestamps' values aside.
    fn assert_same_lines_as_tracing_subscriber(cases: &[(&str, fn())]) {
        for (name, emit) in cases {
            let ours = our_lines(*emit);
            let reference = reference_lines(*emit);
            assert!(!ours.is_empty(), "{name}: no line written");
            assert_eq!(ours.len(), reference.len(), "{name}: number of lines");
            for (our, theirs) in ours.iter().zip(&reference) {
                let mut our_value: serde_json::Value = serde_json::from_str(our)
                    .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {our}"));
                let mut their_value: serde_json::Value = serde_json::from_str(theirs).unwrap();
                our_value["timestamp"] = serde_json::Value::Null;
                their_value["timestamp"] = serde_json::Value::Null;
                assert_eq!(
                    our_value, their_value,
                    "{name}\n ours: {our}\ntheirs: {theirs}"
                );
                assert_eq!(
                    without_timestamp(our),
                    without_timestamp(theirs),
                    "{name}: same values, different text"
                );
            }
        }
    }

    #[test]
    fn lines_without_span_have_timestamp_level_fields_target() {
        assert_same_lines_as_tracing_subscriber(&[
            ("message only", || info!("jakguard listening")),
            (
                "message and fields",
                || info!(bind = %"127.0.0.1:0", port = 43293, "jakguard listening"),
            ),
            ("fields without message", || info!(a = 1, b = "two")),
            ("empty message", || info!("")),
            ("formatted message", || {
                info!("starting service: {:?}, workers: {}", "svc", 2)
            }),
            ("every level", || {
                trace!("t");
                debug!("d");
                info!("i");
                warn!("w");
                error!("e");
            }),
            (
                "custom target",
                || info!(target: "jakguard_storage::sql", path = "data/x", "storage ready"),
            ),
        ]);
    }

    #[test]
    fn lines_in_a_span_carry_its_fields_and_name() {
        assert_same_lines_as_tracing_subscriber(&[
            ("request span as the service opens it", || {
                let span = info_span!(
                    "request",
                    endpoint = %"jakguard-order-sign",
                    method = %"POST",
                    hook_instance = Empty,
                );
                let _entered = span.enter();
                info!(service = %"jakguard-order-sign", status = 400, elapsed_us = 11_u64, "refused");
            }),
            ("span without fields", || {
                let _entered = info_span!("quiet").entered();
                info!("inside");
            }),
            ("fields out of alphabetical order are sorted", || {
                let _entered = info_span!("s", zeta = 1, alpha = 2, mid = "m").entered();
                info!("inside");
            }),
            ("a span's field named name is kept beside its name", || {
                let _entered = info_span!("s", name = "field").entered();
                info!("inside");
            }),
            (
                "debug fields named log.* are left out of spans, not events",
                || {
                    let _entered = info_span!("s", "log.target" = ?"x", kept = 1).entered();
                    info!("log.file" = ?"y", "inside");
                },
            ),
            ("raw identifiers", || {
                let _entered = info_span!("s", r#type = ?"debug", r#loop = "str").entered();
                info!(r#type = ?"debug", "inside");
            }),
            ("after the span is left", || {
                {
                    let _entered = info_span!("s", a = 1).entered();
                    info!("inside");
                }
                info!("outside");
            }),
        ]);
    }

    #[test]
    fn span_fields_recorded_later_are_merged_in_order() {
        assert_same_lines_as_tracing_subscriber(&[
            ("hookInstance recorded after the body is read", || {
                let span = info_span!(
                    "request",
                    endpoint = %"jakguard-order-select",
                    method = %"POST",
                    hook_instance = Empty,
                );
                let _entered = span.enter();
                info!("before");
                tracing::Span::current().record("hook_instance", "fd964d35-e93e-44f6-8a15");
                info!(cards = 2, short_circuited = false, "evaluated");
            }),
            ("recorded first, last and between", || {
                let span = info_span!("s", m = 1, a = Empty, z = Empty, n = Empty);
                let _entered = span.enter();
                span.record("z", "last");
                span.record("a", "first");
                span.record("n", "between");
                info!("inside");
            }),
            ("recorded again replaces the value", || {
                let span = info_span!("s", a = "x", b = 1, c = true);
                let _entered = span.enter();
                span.record("b", "now a string");
                span.record("a", 2.5);
                span.record("c", false);
                span.record("b", 3);
                info!("inside");
            }),
            (
                "recorded next to values with commas, quotes, brackets",
                || {
                    let span = info_span!(
                        "s",
                        b = "a,\"c\":\"d\",",
                        d = "]\\\",\\",
                        f = &b"x,y"[..],
                        c = Empty,
                        e = Empty,
                        a = Empty,
                        g = Empty,
                    );
                    let _entered = span.enter();
                    span.record("c", 1);
                    span.record("e", "\\");
                    span.record("a", "\"");
                    span.record("g", -1);
                    span.record("d", "replaced");
                    info!("inside");
                },
            ),
            ("recorded on a span that is not the current one", || {
                let other = info_span!("other", x = Empty);
                let _entered = info_span!("current", y = 1).entered();
                other.record("x", 5);
                info!("inside");
                info!(parent: &other, "explicit parent");
            }),
            ("recorded before the span is entered", || {
                let span = info_span!("s", late = Empty);
                span.record("late", "v");
                let _entered = span.enter();
                info!("inside");
            }),
        ]);
    }

    #[test]
    fn only_the_current_span_appears() {
        assert_same_lines_as_tracing_subscriber(&[
            ("nested spans: the innermost", || {
                let _outer = info_span!("outer", o = 1).entered();
                info!("in outer");
                {
                    let _inner = info_span!("inner", i = 2).entered();
                    info!("in inner");
                    let _innermost = info_span!("innermost").entered();
                    info!("in innermost");
                }
                info!("back in outer");
            }),
            ("an explicit parent wins over the current span", || {
                let parent = info_span!("parent", p = "x");
                let _current = info_span!("current", c = "y").entered();
                info!(parent: &parent, "to the parent");
                info!("to the current");
            }),
            ("no parent: still the current span", || {
                let _current = info_span!("current", c = "y").entered();
                info!(parent: None, "root event");
            }),
        ]);
    }

    #[test]
    fn values_keep_their_json_types() {
        assert_same_lines_as_tracing_subscriber(&[
            ("integers", || {
                info!(
                    zero = 0,
                    i = -42_i64,
                    i64_min = i64::MIN,
                    u = 42_u64,
                    u64_max = u64::MAX,
                    small = 7_u8,
                    "ints"
                )
            }),
            ("wide integers become strings", || {
                info!(u128_max = u128::MAX, i128_min = i128::MIN, "wide");
                let _entered = info_span!("s", w = u128::MAX, v = i128::MIN).entered();
                info!("in span");
            }),
            ("floats, and null for what JSON lacks", || {
                info!(
                    a = 1.0,
                    b = -0.0,
                    c = 0.1 + 0.2,
                    d = 1e300,
                    e = 5e-324,
                    f = f64::NAN,
                    g = f64::INFINITY,
                    h = f64::NEG_INFINITY,
                    f32 = 1.1_f32,
                    "floats"
                );
                let _entered =
                    info_span!("s", a = 1.5, nan = f64::NAN, big = 1e21, tiny = 1e-7).entered();
                info!("in span");
            }),
            ("booleans", || {
                info!(yes = true, no = false, "bools");
                let _entered = info_span!("s", yes = true, no = false).entered();
                info!("in span");
            }),
            ("display and debug values are strings", || {
                info!(d = %1.5, g = ?2, s = ?"quoted", o = ?Some("x"), v = ?vec![1, 2], "fmt");
                let _entered =
                    info_span!("s", d = %1.5, g = ?2, s = ?"quoted", o = ?Some("x")).entered();
                info!("in span");
            }),
            ("bytes: hex in events, an array in spans", || {
                info!(b = &b"\x00\xffab"[..], "bytes");
                let _entered = info_span!("s", b = &b"\x00\xffab"[..], e = &b""[..]).entered();
                info!("in span");
            }),
            ("errors are their Display form", || {
                let e = io::Error::other("disk \"full\"");
                let e: &(dyn std::error::Error + 'static) = &e;
                info!(error = e, "failed");
                let _entered = info_span!("s", error = e).entered();
                info!("in span");
            }),
        ]);
    }

    /// Every control character, quotes and backslashes, non-ASCII and the characters JSON
    /// itself leaves alone.
    const HOSTILE: &str = "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\t\n\u{b}\u{c}\r\u{e}\u{f}\
        \u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{1a}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} \
        \"quoted\" back\\slash \\\" \\u0041 / \u{7f} é 😀 \u{2028}\u{2029} \u{feff} }{][,:";

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        assert_same_lines_as_tracing_subscriber(&[
            (
                "hostile string values in events",
                || info!(s = HOSTILE, d = %HOSTILE, g = ?HOSTILE, "{}", HOSTILE),
            ),
            ("hostile hookInstance recorded on the request span", || {
                let span =
                    info_span!("request", endpoint = %"e", method = %"POST", hook_instance = Empty);
                let _entered = span.enter();
                span.record("hook_instance", HOSTILE);
                info!("evaluated");
                span.record("hook_instance", "\"},\"name\":\"forged");
                info!("evaluated again");
            }),
            ("hostile span fields at creation", || {
                let _entered = info_span!("s", s = HOSTILE, d = %HOSTILE, g = ?HOSTILE).entered();
                info!("in span");
            }),
            ("field names needing escapes", || {
                info!(
                    "quo\"te" = 1,
                    "back\\slash" = 2,
                    "new\nline" = 3,
                    "nul\u{0}" = 4,
                    "bell\u{7}" = 5,
                    "m"
                );
                let _entered =
                    info_span!("s", "b\"x" = 1, "b" = 2, "a\u{1}" = 3, "a" = 4, "a b" = 5)
                        .entered();
                info!("in span");
            }),
            ("target and span name needing escapes", || {
                info!(target: "we\"ird\\target\n", "m");
                let _entered = info_span!(target: "t\u{1}", "span \"name\"\t", a = 1).entered();
                info!("in span");
            }),
            ("a message that looks like JSON", || {
                info!("\"}}, \"level\": \"ERROR\", {{\"")
            }),
        ]);
    }

    /// Where the lines differ from tracing-subscriber's, on purpose: it re-reads a span's fields
    /// into a map of borrowed names, which fails when a name needed escaping, and then drops
    /// whatever is recorded on that span later. Here the recorded fields are kept, in order.
    #[test]
    fn fields_recorded_on_a_span_with_escaped_names_are_kept() {
        let lines = our_lines(|| {
            let span = info_span!(
                "s",
                "b\"x" = 1,
                "b" = 2,
                "a\u{1}" = 3,
                "a\\" = Empty,
                "é" = Empty
            );
            let _entered = span.enter();
            span.record("é", 7);
            span.record("a\\", 6);
            span.record("b\"x", "again");
            info!("in span");
        });
        let [line] = lines.as_slice() else {
            panic!("one line expected: {lines:?}");
        };
        assert!(
            line.ends_with(
                r#""span":{"a\u0001":3,"a\\":6,"b":2,"b\"x":"again","é":7,"name":"s"}}"#
            ),
            "{line}"
        );
        let reference = reference_lines(|| {
            let span = info_span!("s", "b\"x" = 1, "a\\" = Empty);
            let _entered = span.enter();
            span.record("a\\", 6);
            info!("in span");
        });
        assert!(
            reference[0].ends_with(r#""span":{"b\"x":1,"name":"s"}}"#),
            "tracing-subscriber now keeps them; compare with it instead: {}",
            reference[0]
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let cases: &[(i64, u32, &str)] = &[
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (1, 999_999_999, "1970-01-01T00:00:01.999999Z"),
            (1_764_635_049, 841_254_000, "2025-12-02T00:24:09.841254Z"),
            (1_796_171_049, 841_254_321, "2026-12-02T00:24:09.841254Z"),
            (951_782_400, 1_000, "2000-02-29T00:00:00.000001Z"),
            (951_868_799, 0, "2000-02-29T23:59:59.000000Z"),
            (1_709_164_800, 0, "2024-02-29T00:00:00.000000Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
            (4_107_456_000, 0, "2100-02-28T00:00:00.000000Z"),
            (1_735_689_599, 500_000_000, "2024-12-31T23:59:59.500000Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
            (253_402_300_800, 0, "+10000-01-01T00:00:00.000000Z"),
            (-1, 0, "1969-12-31T23:59:59.000000Z"),
            (-1, 500_000_000, "1969-12-31T23:59:59.500000Z"),
            (-62_167_219_200, 0, "0000-01-01T00:00:00.000000Z"),
            (-62_167_219_201, 0, "-0001-12-31T23:59:59.000000Z"),
        ];
        for &(secs, nanos, expected) in cases {
            let offset = Duration::new(secs.unsigned_abs(), 0);
            let whole = if secs >= 0 {
                UNIX_EPOCH + offset
            } else {
                UNIX_EPOCH - offset
            };
            let time = whole + Duration::from_nanos(u64::from(nanos));
            let mut s = String::new();
            write_timestamp(&mut s, time).unwrap();
            assert_eq!(s, expected, "{secs} s {nanos} ns");
        }
    }

    #[test]
    fn civil_dates_follow_each_other_day_by_day() {
        // Every day from 1600 to 2500 is the day after the previous one.
        let (mut year, mut month, mut day) = civil_from_days(-135_140); // 1600-01-01
        assert_eq!((year, month, day), (1600, 1, 1));
        for days in -135_139..193_000 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let month_len = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            (year, month, day) = match (day == month_len, month == 12) {
                (false, _) => (year, month, day + 1),
                (true, false) => (year, month + 1, 1),
                (true, true) => (year + 1, 1, 1),
            };
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
        }
    }

    #[test]
    fn span_fragment_entries_are_found_whatever_the_values_hold() {
        let mut fragment = String::new();
        let mut fields = SpanFields {
            fragment: &mut fragment,
        };
        fields.put("c", |w| write_json_string(w, "x\",\"b\":\"y"));
        fields.put("e", |w| w.write_str("[1,2]"));
        fields.put("a", |w| write_json_string(w, "\\"));
        fields.put("d", |w| w.write_str("-1.5"));
        fields.put("b", |w| w.write_str("true"));
        fields.put("c", |w| w.write_str("null"));
        assert_eq!(fragment, r#""a":"\\","b":true,"c":null,"d":-1.5,"e":[1,2]"#);
        let names: Vec<&str> = entries(fragment.as_bytes())
            .map(|(key, _)| &fragment[key])
            .collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn span_fragment_scan_does_not_panic_on_a_fragment_it_did_not_write() {
        // Only this module writes fragments, but a bug in logging must not take a request down.
        for fragment in [
            "\"",
            "\"a",
            "\"a\"",
            "\"a\":",
            "\"a\":\"b",
            "\"a\\",
            "\"a\":[1",
            "\"a\":1,",
            ",",
            "x",
            "\"\\u00",
        ] {
            let _ = entries(fragment.as_bytes()).count();
            let _ = slot(fragment, "m");
            let mut owned = fragment.to_owned();
            SpanFields {
                fragment: &mut owned,
            }
            .put("m", |w| w.write_str("1"));
        }
    }
}
