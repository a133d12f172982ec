//! Code matching: ICD-10 patterns in any flavour, ATC prefixes, and words of free text.
//!
//! Everything here is pure and total: a code that cannot be normalised simply matches nothing.

use crate::hash::FastSet;

/// Normalises an ICD-10 code of any flavour (WHO, ICD-10-CM, French CIM-10) for comparison:
/// upper case, without the dot, spaces, dashes or the French "+" extensions.
/// `"m32.1"`, `"M321"` and `"M32.1+"` all give `"M321"`.
pub fn normalize_icd10(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// One entry of an ICD-10 list: a code or a range, included or excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IcdPattern {
    lo: String,
    hi: String,
    exclude: bool,
}

impl IcdPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let (exclude, body) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (lo, hi) = match body.split_once('-') {
            Some((a, b)) => (normalize_icd10(a), normalize_icd10(b)),
            None => (normalize_icd10(body), normalize_icd10(body)),
        };
        let well_formed = |s: &str| {
            s.len() >= 3
                && s.as_bytes()[0].is_ascii_uppercase()
                && s[1..3]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        };
        if !well_formed(&lo) || !well_formed(&hi) {
            return Err(format!(
                "`{text}` is not an ICD-10 code or range (e.g. `I10`, `I20-I25`, `!C44`)"
            ));
        }
        if lo.len() != hi.len() || lo > hi {
            return Err(format!(
                "`{text}`: a range needs two codes of the same length, lowest first"
            ));
        }
        Ok(IcdPattern { lo, hi, exclude })
    }

    /// How specific the pattern is: the number of characters it fixes.
    fn specificity(&self) -> usize {
        self.lo.len()
    }

    fn matches(&self, normalized: &str) -> bool {
        if normalized.len() < self.lo.len() {
            return false;
        }
        let prefix = &normalized[..self.lo.len()];
        prefix >= self.lo.as_str() && prefix <= self.hi.as_str()
    }
}

/// A list of ICD-10 patterns; the most specific matching pattern decides, so exclusions can
/// carve holes in ranges and inclusions can fill holes in exclusions.
#[derive(Debug, Clone, Default)]
pub struct IcdList {
    patterns: Vec<IcdPattern>,
}

impl IcdList {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let patterns = entries
            .iter()
            .map(|e| IcdPattern::parse(e))
            .collect::<Result<_, _>>()?;
        Ok(IcdList { patterns })
    }

    /// Whether an already normalised code is in the list.
    pub fn contains(&self, normalized: &str) -> bool {
        let mut best: Option<&IcdPattern> = None;
        for p in self.patterns.iter().filter(|p| p.matches(normalized)) {
            best = match best {
                None => Some(p),
                Some(b) if p.specificity() > b.specificity() => Some(p),
                // On a tie, an explicit exclusion wins.
                Some(b) if p.specificity() == b.specificity() && p.exclude => Some(p),
                Some(b) => Some(b),
            };
        }
        matches!(best, Some(p) if !p.exclude)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// A set of exact codes (SNOMED CT, RxNorm, LOINC).
#[derive(Debug, Clone, Default)]
pub struct CodeSet(FastSet<String>);

impl CodeSet {
    pub fn parse(entries: &[String], what: &str) -> Result<Self, String> {
        let mut set = FastSet::default();
        for e in entries {
            let e = e.trim();
            if e.is_empty() || e.chars().any(char::is_whitespace) {
                return Err(format!("`{e}` is not a {what} code"));
            }
            set.insert(e.to_owned());
        }
        Ok(CodeSet(set))
    }

    pub fn contains(&self, code: &str) -> bool {
        self.0.contains(code.trim())
    }

    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// ATC codes or prefixes; the longest matching prefix is reported so that callers can prefer
/// the most specific entry (`L04AF01` over `L04AF`).
#[derive(Debug, Clone, Default)]
pub struct AtcList(Vec<String>);

impl AtcList {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for e in entries {
            let n: String = e
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_uppercase();
            if n.is_empty() || !n.as_bytes()[0].is_ascii_uppercase() {
                return Err(format!("`{e}` is not an ATC code or prefix"));
            }
            out.push(n);
        }
        Ok(AtcList(out))
    }

    /// Length of the longest entry that prefixes `code`, if any.
    pub fn match_len(&self, code: &str) -> Option<usize> {
        // Entries are upper-case ASCII: a prefix compared ignoring ASCII case is the prefix of
        // the upper-cased code, without making that string for every code of a record.
        let code = code.trim().as_bytes();
        self.0
            .iter()
            .filter(|p| {
                code.get(..p.len())
                    .is_some_and(|c| c.eq_ignore_ascii_case(p.as_bytes()))
            })
            .map(|p| p.len())
            .max()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits free text into lower-case words without accents, so that
/// `"XELJANZ 5 mg, comprimé pelliculé"` gives `["xeljanz", "5", "mg", "comprime", "pellicule"]`.
pub fn words(text: &str) -> Vec<String> {
    let mut w = Words::default();
    w.add(text);
    w.iter().map(str::to_owned).collect()
}

/// The words of one or more texts, as [`words`] splits them, in one buffer: the rules split the
/// texts of every medication of a record, and a `String` per word was an allocation per word
/// (and a few more as each grew). Words of texts added one after the other follow each other,
/// as if the texts were one list.
#[derive(Debug, Clone, Default)]
pub struct Words {
    buf: String,
    /// Where each word ends in `buf`; a word starts where the one before it ends.
    ends: Vec<usize>,
}

impl Words {
    pub fn of(text: &str) -> Words {
        let mut w = Words::default();
        w.add(text);
        w
    }

    /// Appends the words of `text`.
    pub fn add(&mut self, text: &str) {
        self.buf.reserve(text.len());
        for c in text.chars() {
            // Most text is ASCII: no need for the Unicode tables.
            if c.is_ascii_alphanumeric() {
                self.buf.push(c.to_ascii_lowercase());
                continue;
            }
            match fold_char(c) {
                Some(s) => self.buf.push_str(s),
                None if c.is_alphanumeric() => self.buf.extend(c.to_lowercase()),
                None => self.end_word(),
            }
        }
        self.end_word();
    }

    /// Ends the word being written, if any letters were written since the last one ended.
    fn end_word(&mut self) {
        if self.buf.len() > self.ends.last().copied().unwrap_or(0) {
            self.ends.push(self.buf.len());
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`-th word.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.buf[start..end])
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Whether `phrase` appears in these words as consecutive whole words.
    fn contains_phrase(&self, phrase: &[String]) -> bool {
        let Some((first, rest)) = phrase.split_first() else {
            return false;
        };
        if phrase.len() > self.len() {
            return false;
        }
        // This runs for every name of the knowledge against every medication of a record:
        // each word's bounds come from walking `ends` once, and only a word of the first
        // word's length is compared at all.
        let mut start = 0;
        for i in 0..=self.len() - phrase.len() {
            let end = self.ends[i];
            if end - start == first.len()
                && self.buf.as_bytes()[start..end] == *first.as_bytes()
                && rest
                    .iter()
                    .enumerate()
                    .all(|(j, p)| self.get(i + 1 + j) == Some(p.as_str()))
            {
                return true;
            }
            start = end;
        }
        false
    }
}

fn fold_char(c: char) -> Option<&'static str> {
    Some(match c {
        'a'..='z' | '0'..='9' => return None,
        'A'..='Z' => return None,
        'à' | 'â' | 'ä' | 'á' | 'ã' | 'å' | 'À' | 'Â' | 'Ä' | 'Á' => "a",
        'ç' | 'Ç' => "c",
        'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => "e",
        'î' | 'ï' | 'í' | 'ì' | 'Î' | 'Ï' => "i",
        'ô' | 'ö' | 'ó' | 'ò' | 'õ' | 'Ô' | 'Ö' => "o",
        'ù' | 'û' | 'ü' | 'ú' | 'Ù' | 'Û' | 'Ü' => "u",
        'ÿ' => "y",
        'ñ' => "n",
        'œ' | 'Œ' => "oe",
        'æ' | 'Æ' => "ae",
        _ => return None,
    })
}

/// Names (single words or phrases) matched as whole words in free text.
#[derive(Debug, Clone, Default)]
pub struct NameList(Vec<Vec<String>>);

impl NameList {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for e in entries {
            let w = words(e);
            if w.is_empty() {
                return Err(format!("`{e}` has no word to match"));
            }
            out.push(w);
        }
        Ok(NameList(out))
    }

    /// Whether one of the names appears, as consecutive whole words, in `text_words`.
    pub fn found_in(&self, text_words: &Words) -> bool {
        self.0.iter().any(|name| text_words.contains_phrase(name))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(e: &[&str]) -> IcdList {
        IcdList::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn icd10_flavours_normalise_to_the_same_code() {
        assert_eq!(normalize_icd10("m32.1"), "M321");
        assert_eq!(normalize_icd10("M321"), "M321");
        assert_eq!(normalize_icd10(" M32.1+ "), "M321");
    }

    #[test]
    fn icd10_ranges_cover_their_children() {
        let l = list(&["I20-I25"]);
        assert!(l.contains("I20"));
        assert!(l.contains("I219"));
        assert!(l.contains("I2510"));
        assert!(!l.contains("I26"));
        assert!(!l.contains("I1"));
    }

    #[test]
    fn the_most_specific_icd10_pattern_decides() {
        let l = list(&["C00-C97", "!C44", "Z85", "!Z85.82", "Z85.820"]);
        assert!(l.contains("C50912"));
        assert!(!l.contains("C449"));
        assert!(l.contains("Z853"));
        assert!(!l.contains("Z85828"));
        assert!(l.contains("Z85820"));
    }

    #[test]
    fn malformed_icd10_patterns_are_refused() {
        assert!(IcdList::parse(&["10".to_string()]).is_err());
        assert!(IcdList::parse(&["I25-I20".to_string()]).is_err());
    }

    #[test]
    fn words_fold_case_and_accents() {
        assert_eq!(
            words("XELJANZ 5 mg, comprimé pelliculé"),
            ["xeljanz", "5", "mg", "comprime", "pellicule"]
        );
        assert_eq!(words("Œstradiol"), ["oestradiol"]);
    }

    #[test]
    fn names_match_whole_words_only() {
        let n = NameList::parse(&["rinvoq".into(), "ethinyl estradiol".into()]).unwrap();
        assert!(n.found_in(&Words::of("RINVOQ 15 mg")));
        assert!(!n.found_in(&Words::of("rinvoqx")));
        assert!(n.found_in(&Words::of("levonorgestrel / ethinyl estradiol 0.1 mg")));
        assert!(!n.found_in(&Words::of("ethinyl")));
        assert!(!n.found_in(&Words::of("")));
    }

    #[test]
    fn words_of_several_texts_follow_each_other_as_one_list() {
        let mut w = Words::of("Ethinyl");
        w.add("  ");
        w.add("ESTRADIOL, comprimé");
        assert_eq!(
            w.iter().collect::<Vec<_>>(),
            ["ethinyl", "estradiol", "comprime"]
        );
        assert_eq!(w.get(1), Some("estradiol"));
        assert_eq!(w.get(3), None);
        // A phrase split between two texts is found, as it was in the list the texts gave.
        let n = NameList::parse(&["ethinyl estradiol".into()]).unwrap();
        assert!(n.found_in(&w));
        // Each text ends its last word: no word runs from one text into the next.
        let mut w = Words::of("ab");
        w.add("cd");
        assert_eq!(w.iter().collect::<Vec<_>>(), ["ab", "cd"]);
    }

    #[test]
    fn atc_reports_the_longest_prefix() {
        let a = AtcList::parse(&["L04AF".into(), "L04AF01".into()]).unwrap();
        assert_eq!(a.match_len("L04AF01"), Some(7));
        assert_eq!(a.match_len("L04AF02"), Some(5));
        assert_eq!(a.match_len("L04AA"), None);
        // Whatever the case and surrounding spaces; a shorter code matches no longer entry.
        assert_eq!(a.match_len(" l04aF01 "), Some(7));
        assert_eq!(a.match_len("L04A"), None);
        assert_eq!(a.match_len("é"), None);
    }
}
