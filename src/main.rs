//! `jakguard`: the command line. `serve` runs the CDS Hooks service; `eval` prints the
//! response the service would give to one request.

mod logging;
mod logwriter;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};

/// mimalloc instead of glibc's allocator: reading a request and rendering its cards make many
/// small, short-lived allocations, and the profile of the running service (callgrind, the
/// fixture requests) showed glibc's malloc and free at a fifth of its instructions; mimalloc
/// cut the total by 13%.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use jakguard_knowledge::{Knowledge, Lang};
use jakguard_server::{Application, Config};

#[derive(Parser)]
#[command(
    name = "jakguard",
    version,
    about = "CDS Hooks service that checks JAK inhibitor orders against the 2023 ANSM/EMA restrictions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file and print the effective configuration, secrets masked.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run the service (defaults: 127.0.0.1:8080, embedded knowledge).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        bind: Option<String>,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Allow listening on a non-loopback address without authenticated clients.
        #[arg(long)]
        insecure: bool,
    },
    /// Print the response the service would give to a request (FILE, or - for standard input).
    Eval {
        /// Service id; by default the one of the request's hook.
        #[arg(long)]
        service: Option<String>,
        /// Evaluation date, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        today: Option<String>,
        /// Card language: en or fr (default: the configured default).
        #[arg(long)]
        language: Option<String>,
        /// TOML configuration file (for the default language and the knowledge folder).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Indent the JSON.
        #[arg(long)]
        pretty: bool,
        /// Read what the request's prefetch lacks from this FHIR server (its base URL), as if
        /// the request named it in `fhirServer`; https except loopback.
        #[arg(long, requires = "token")]
        fhir_server: Option<String>,
        /// The bearer token for --fhir-server (it is never printed).
        #[arg(long, requires = "fhir_server")]
        token: Option<String>,
        file: String,
    },
    /// How the cards are used: per topic and molecule, cards issued, accepted, overridden,
    /// and the override reasons with their counts (from the configured storage).
    Report {
        /// First day included, YYYY-MM-DD (UTC).
        #[arg(long)]
        from: Option<String>,
        /// Last day included, YYYY-MM-DD (UTC).
        #[arg(long)]
        to: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// TOML configuration file (for [storage]).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate FILE (with the JAKGUARD_* environment applied) and print the result.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jakguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs to standard error: human-readable on a terminal, JSON lines otherwise. Keep the guard
/// for as long as the service runs: dropping it writes out what is still buffered.
#[must_use = "dropping the guard stops the log writer"]
fn init_tracing() -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JAKGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::io::stderr().is_terminal() {
        builder.with_writer(std::io::stderr).init();
        return None;
    }
    // One line per call costs a write to standard error; under load that system call on the
    // worker was a tenth of the throughput. Lines go through a bounded channel to a writer
    // thread that buffers them and writes a batch at a time (flushed whenever the channel is
    // empty, then a pause of `logwriter::PAUSE` so that the next batch gathers the lines of a
    // few milliseconds). Not lossy: a full channel makes the worker wait rather than drop a line.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("jakguard-log")
        .finish(logwriter::Gather::new(std::io::stderr()));
    // The current span (endpoint, hookInstance) is on every line, not the list of spans,
    // which would repeat it. The lines have the shape of tracing-subscriber's `json()` (with
    // `with_span_list(false)`) but are written by `logging`, for a fraction of the cost.
    builder
        .with_writer(writer)
        .fmt_fields(logging::JsonSpanFields)
        .event_format(logging::JsonLines)
        .init();
    Some(guard)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Report {
            from,
            to,
            json,
            config,
        } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            let period = jakguard_storage::Period::parse(from.as_deref(), to.as_deref())
                .map_err(anyhow::Error::msg)?;
            let db = jakguard_storage::open_database(&cfg.storage.options())?;
            let report = db.report(period)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_table());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            action: ConfigAction::Check { file },
        } => {
            // Everything `serve` would check before listening, without listening.
            let cfg = Config::load(Some(&file), std::env::vars())?;
            match &cfg.knowledge_dir {
                Some(dir) => Knowledge::from_dir(dir)?,
                None => Knowledge::embedded()?,
            };
            jakguard_auth::Verifier::new(&cfg.clients)?;
            print!("{}", cfg.effective());
            eprintln!("jakguard: `{}` is valid", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            bind,
            config,
            insecure,
        } => {
            let _log = init_tracing();
            let mut cfg = Config::load(config.as_deref(), std::env::vars())?;
            if let Some(b) = bind {
                cfg.bind = b.parse().with_context(|| {
                    format!("--bind `{b}` is not an address such as 127.0.0.1:8080")
                })?;
            }
            cfg.insecure = insecure;
            cfg.check_security()?;
            if insecure && !cfg.bind.ip().is_loopback() {
                tracing::warn!(bind = %cfg.bind, "listening WITHOUT authentication on a non-loopback address (--insecure)");
            } else {
                tracing::warn!(
                    "no CDS clients configured: accepting unauthenticated calls on loopback only"
                );
            }
            actix_web::rt::System::new().block_on(async {
                let app = Application::build(&cfg)?;
                tracing::info!(bind = %cfg.bind, port = app.port(), "jakguard listening");
                app.run_until_stopped().await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            service,
            today,
            language,
            config,
            pretty,
            fhir_server,
            token,
            file,
        } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            let knowledge = match &cfg.knowledge_dir {
                Some(dir) => Knowledge::from_dir(dir)?,
                None => Knowledge::embedded()?,
            };
            let body = if file == "-" {
                let mut b = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut b)
                    .context("reading standard input")?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("reading `{file}`"))?
            };
            let today = match today {
                Some(t) => jakguard_rules::Date::parse(&t)
                    .with_context(|| format!("--today `{t}` is not a date YYYY-MM-DD"))?,
                None => jakguard_server::today_utc(),
            };
            let lang: Lang = match language {
                Some(l) => l
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--language `{l}`: use en or fr"))?,
                None => cfg.default_language,
            };
            let service = match service {
                Some(s) => s,
                None => service_for_hook(&body)?,
            };
            let mut allow = jakguard_server::fetch::Allowlist::new(
                &cfg.fhir.allowed_servers,
                cfg.fhir.allow_http_loopback,
            )?;
            let body = match (&fhir_server, &token) {
                (Some(server), Some(token)) => {
                    // The operator names the server: it is allowed for this run, with the
                    // same https rule as the configuration.
                    allow = allow.with(server, cfg.fhir.allow_http_loopback)?;
                    with_fhir_server(&body, server, token)?
                }
                _ => body,
            };
            let fetcher =
                jakguard_server::fetch::Fetcher::with_allowlist(allow, cfg.fhir.fetch_config())?;
            let engine = jakguard_cds::Engine::new(Arc::new(knowledge));
            // The same phases as the HTTP service: prepare, fetch what is missing, complete.
            let evaluated = match engine.prepare(&service, &body) {
                Err(e) => Err(e),
                Ok(prepared) => {
                    let fetched =
                        actix_web::rt::System::new().block_on(fetcher.fetch_for(&prepared));
                    match fetched {
                        Ok(f) => {
                            // The data manager sees why a key could not be read (never the
                            // token: the reasons do not carry it).
                            for k in &f.fetched {
                                use jakguard_cds::FetchOutcome;
                                if let FetchOutcome::Failed(why)
                                | FetchOutcome::Partial { reason: why, .. } = &k.outcome
                                {
                                    eprintln!("jakguard: fetching `{}`: {why}", k.key);
                                }
                            }
                            engine.complete(&prepared, &f.fetched, lang, today)
                        }
                        Err(jakguard_server::fetch::Refused::ServerNotAllowed { keys }) => {
                            Err(jakguard_cds::CdsError::PreconditionFailed(keys))
                        }
                    }
                }
            };
            match evaluated {
                Ok(resp) => {
                    let out = if pretty {
                        serde_json::to_string_pretty(&resp.response)?
                    } else {
                        // What the HTTP service writes, byte for byte.
                        String::from_utf8(jakguard_cds::json::to_vec(&resp.response)?)?
                    };
                    println!("{out}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!(
                        "jakguard: {} ({}): {e}",
                        status_name(e.status()),
                        e.status()
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn status_name(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        404 => "unknown service",
        412 => "precondition failed",
        _ => "error",
    }
}

/// The request with `fhirServer` and `fhirAuthorization` set (for `eval --fhir-server`). Every
/// other member is kept as written (raw), so the EHR's resources are echoed unchanged.
fn with_fhir_server(body: &[u8], server: &str, token: &str) -> anyhow::Result<Vec<u8>> {
    use serde_json::value::{to_raw_value, RawValue};
    let mut request: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).context("the request is not a JSON object")?;
    request.insert("fhirServer".into(), to_raw_value(server)?);
    let authorization = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "scope": "patient/*.read",
    });
    request.insert("fhirAuthorization".into(), to_raw_value(&authorization)?);
    Ok(serde_json::to_vec(&request)?)
}

/// The service of the request's `hook`, so `eval` needs no `--service` for ordinary requests.
fn service_for_hook(body: &[u8]) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct H {
        hook: Option<String>,
    }
    let h: H = serde_json::from_slice(body).context("the request is not JSON")?;
    match h.hook.as_deref() {
        Some(hook) => match jakguard_cds::SERVICES
            .iter()
            .find(|s| s.hook.as_str() == hook)
        {
            Some(s) => Ok(s.id.to_owned()),
            None => bail!("no service for hook `{hook}`; pass --service"),
        },
        None => bail!("the request has no `hook`; pass --service"),
    }
}
