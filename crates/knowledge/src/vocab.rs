//! The fixed vocabulary of the public contract (`shared/contract.md`): factor codes, card
//! topics, indicators and languages.
//!
//! These are enums rather than strings so that a typo in a data file is caught when the
//! knowledge is loaded, and a typo in code does not compile.

use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in contract order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The code as written in the contract.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownCode;
            fn from_str(s: &str) -> Result<Self, UnknownCode> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownCode { kind: stringify!($name), code: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A code that is not part of the contract's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{code}`")]
pub struct UnknownCode {
    pub kind: &'static str,
    pub code: String,
}

string_enum! {
    /// A risk factor or missing-data code of `extension.jakguard.factors`.
    FactorCode {
        Age65Plus => "age-65-plus",
        SmokerCurrent => "smoker-current",
        SmokerFormer => "smoker-former",
        AtheroscleroticCvDisease => "atherosclerotic-cv-disease",
        Hypertension => "hypertension",
        Diabetes => "diabetes",
        Dyslipidemia => "dyslipidemia",
        HeartFailure => "heart-failure",
        Obesity => "obesity",
        Malignancy => "malignancy",
        VteHistory => "vte-history",
        Thrombophilia => "thrombophilia",
        HormonalTherapy => "hormonal-therapy",
        ConnectiveTissueDisease => "connective-tissue-disease",
        Lymphopenia => "lymphopenia",
        Neutropenia => "neutropenia",
        Anemia => "anemia",
        Thrombocytopenia => "thrombocytopenia",
        SmokingStatusUnknown => "smoking-status-unknown",
        BirthDateUnknown => "birth-date-unknown",
        BloodCountMissing => "blood-count-missing",
    }
}

string_enum! {
    /// A card topic (`source.topic.code`, system `urn:jakguard:topic`).
    Topic {
        AnsmRestriction => "ansm-restriction",
        VteCaution => "vte-caution",
        CtdOffLabel => "ctd-off-label",
        DoseAdjustment => "dose-adjustment",
        BloodCount => "blood-count",
        MissingData => "missing-data",
    }
}

string_enum! {
    /// A card's urgency, in increasing order.
    Indicator {
        Info => "info",
        Warning => "warning",
        Critical => "critical",
    }
}

string_enum! {
    /// A language cards are written in.
    Lang {
        En => "en",
        Fr => "fr",
    }
}

string_enum! {
    /// A blood-count analyte with a start threshold.
    Analyte {
        Lymphocytes => "lymphocytes",
        Neutrophils => "neutrophils",
        Haemoglobin => "haemoglobin",
        Platelets => "platelets",
    }
}

impl FactorCode {
    /// The topic whose card carries this factor (contract: "a factor appears on the card of its topic").
    pub fn topic(self) -> Topic {
        use FactorCode::*;
        match self {
            Age65Plus
            | SmokerCurrent
            | SmokerFormer
            | AtheroscleroticCvDisease
            | Hypertension
            | Diabetes
            | Dyslipidemia
            | HeartFailure
            | Obesity
            | Malignancy => Topic::AnsmRestriction,
            VteHistory | Thrombophilia | HormonalTherapy => Topic::VteCaution,
            ConnectiveTissueDisease => Topic::CtdOffLabel,
            Lymphopenia | Neutropenia | Anemia | Thrombocytopenia => Topic::BloodCount,
            SmokingStatusUnknown | BirthDateUnknown | BloodCountMissing => Topic::MissingData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_text() {
        for f in FactorCode::ALL {
            assert_eq!(f.as_str().parse::<FactorCode>().unwrap(), *f);
        }
        for t in Topic::ALL {
            assert_eq!(t.as_str().parse::<Topic>().unwrap(), *t);
        }
    }

    #[test]
    fn unknown_codes_are_refused_with_their_kind() {
        let err = "age-64-plus".parse::<FactorCode>().unwrap_err();
        assert_eq!(err.kind, "FactorCode");
    }
}
