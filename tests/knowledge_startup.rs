//! A broken knowledge folder stops start-up with a message naming the file and the entry.
//!
//! Each case copies `knowledge/` to a temporary folder, breaks one entry, points a
//! configuration file's `knowledge_dir` at it and runs the real binary: `eval` and
//! `config check` must fail with a non-zero status and a message that names the file and the
//! entry, and `serve` must refuse to start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jakguard");
const FILES: [&str; 6] = [
    "molecules.toml",
    "factors.toml",
    "observations.toml",
    "thresholds.toml",
    "doses.toml",
    "texts.toml",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of `knowledge/` in a fresh folder, with `config.toml` pointing at it.
fn knowledge_copy(name: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("knowledge-startup-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let knowledge = dir.join("knowledge");
    std::fs::create_dir_all(&knowledge).unwrap();
    for f in FILES {
        std::fs::copy(root().join("knowledge").join(f), knowledge.join(f)).unwrap();
    }
    let config = dir.join("config.toml");
    // Relative to the configuration file, as every path in it.
    std::fs::write(&config, "knowledge_dir = \"knowledge\"\n").unwrap();
    (knowledge, config)
}

/// Replaces the first occurrence of `from`, which must be there.
fn break_entry(knowledge: &Path, file: &str, from: &str, to: &str) {
    let path = knowledge.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(from),
        "`{from}` is not in {file}: update the test"
    );
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn eval(config: &Path) -> Output {
    Command::new(BIN)
        .arg("eval")
        .arg("--config")
        .arg(config)
        .args(["--today", "2026-12-01"])
        .arg(root().join("fixtures/requests/01-elderly-hypertensive-tofacitinib.json"))
        .env_remove("JAKGUARD_KNOWLEDGE_DIR")
        .output()
        .unwrap()
}

fn config_check(config: &Path) -> Output {
    Command::new(BIN)
        .args(["config", "check"])
        .arg(config)
        .env_remove("JAKGUARD_KNOWLEDGE_DIR")
        .output()
        .unwrap()
}

/// Runs `serve` on an ephemeral loopback port; it must exit by itself, quickly.
fn serve(config: &Path) -> Output {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--bind", "127.0.0.1:0"])
        .env_remove("JAKGUARD_KNOWLEDGE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve started on a broken knowledge folder:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

struct Case {
    desc: &'static str,
    file: &'static str,
    from: &'static str,
    to: &'static str,
    /// What the message must name besides the file: the entry, and what is wrong.
    names: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            desc: "an ICD-10 range written backwards",
            file: "factors.toml",
            from: "\"I10-I15\"",
            to: "\"I15-I10\"",
            names: &["factor `hypertension`", "I15-I10"],
        },
        Case {
            desc: "a factor code outside the contract",
            file: "factors.toml",
            from: "code = \"thrombophilia\"",
            to: "code = \"thrombophilie\"",
            names: &["thrombophilie"],
        },
        Case {
            desc: "a malformed ATC code",
            file: "molecules.toml",
            from: "atc = [\"L04AF02\", \"L04AA37\"]",
            to: "atc = [\"04AF02\", \"L04AA37\"]",
            names: &["molecule `baricitinib`", "04AF02"],
        },
        Case {
            desc: "a negative blood-count threshold",
            file: "thresholds.toml",
            from: "lymphocytes = 0.75",
            to: "lymphocytes = -0.75",
            names: &["tofacitinib", "lymphocytes"],
        },
        Case {
            desc: "a dose limit for a misspelt molecule",
            file: "doses.toml",
            from: "molecule = \"filgotinib\"",
            to: "molecule = \"filgotinibe\"",
            names: &["filgotinibe"],
        },
        Case {
            desc: "a zero dose limit",
            file: "doses.toml",
            from: "max_mg_per_day = 100.0",
            to: "max_mg_per_day = 0.0",
            names: &["limit", "filgotinib"],
        },
        Case {
            desc: "a unit conversion factor of zero",
            file: "observations.toml",
            from: "{ unit = \"/mm3\", factor = 0.001 }",
            to: "{ unit = \"/mm3\", factor = 0.0 }",
            names: &["analyte `lymphocytes`", "/mm3"],
        },
        Case {
            desc: "a card text missing in French",
            file: "texts.toml",
            from: "factor.obesity = \"Obésité\"\n",
            to: "",
            names: &["factor.obesity"],
        },
        Case {
            desc: "a TOML syntax error",
            file: "thresholds.toml",
            from: "[baricitinib]",
            to: "[baricitinib",
            names: &["line "],
        },
    ]
}

fn assert_names(desc: &str, what: &str, out: &Output, file: &str, names: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{desc}: `{what}` succeeded");
    assert!(
        out.stdout.is_empty() || what == "serve",
        "{desc}: `{what}` printed a response"
    );
    assert!(
        stderr.contains(file),
        "{desc}: `{what}` does not name {file}:\n{stderr}"
    );
    for n in names {
        assert!(
            stderr.contains(n),
            "{desc}: `{what}` does not name `{n}`:\n{stderr}"
        );
    }
}

#[test]
fn an_intact_copy_of_the_knowledge_folder_is_used() {
    let (_, config) = knowledge_copy("intact");
    let out = eval(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("ansm-restriction"), "{body}");
    assert!(config_check(&config).status.success());
}

#[test]
fn a_broken_entry_stops_eval_and_config_check_naming_file_and_entry() {
    for (i, c) in cases().iter().enumerate() {
        let (knowledge, config) = knowledge_copy(&format!("case{i}"));
        break_entry(&knowledge, c.file, c.from, c.to);
        assert_names(c.desc, "eval", &eval(&config), c.file, c.names);
        assert_names(
            c.desc,
            "config check",
            &config_check(&config),
            c.file,
            c.names,
        );
    }
}

#[test]
fn a_broken_entry_stops_serve_before_it_listens() {
    let (knowledge, config) = knowledge_copy("serve");
    break_entry(&knowledge, "factors.toml", "\"I10-I15\"", "\"I15-I10\"");
    let out = serve(&config);
    assert_names(
        "an ICD-10 range written backwards",
        "serve",
        &out,
        "factors.toml",
        &["factor `hypertension`"],
    );
}

#[test]
fn a_missing_knowledge_file_stops_start_up_naming_it() {
    let (knowledge, config) = knowledge_copy("missing");
    std::fs::remove_file(knowledge.join("doses.toml")).unwrap();
    let out = eval(&config);
    assert_names(
        "a missing file",
        "eval",
        &out,
        "doses.toml",
        &["cannot be read"],
    );
}
