//! `nodeimg`: build, stamp and flash SD-card images for clusters of aarch64 boards.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses
//! the command line and reports errors as one line on stderr.

#![forbid(unsafe_code)]

#[macro_use]
mod out;
mod cmd;
mod exit;
mod progress;
mod signals;

use clap::Parser;
use std::process::ExitCode;

/// Build, stamp and flash SD-card images for clusters of aarch64 boards.
#[derive(Debug, Parser)]
#[command(name = "nodeimg", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log more (repeat for debug and trace) to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::Code::Usage.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing_subscriber::filter::LevelFilter::ERROR,
        (_, 0) => tracing_subscriber::filter::LevelFilter::WARN,
        (_, 1) => tracing_subscriber::filter::LevelFilter::INFO,
        (_, 2) => tracing_subscriber::filter::LevelFilter::DEBUG,
        _ => tracing_subscriber::filter::LevelFilter::TRACE,
    };
    out::set_quiet(cli.quiet);
    out::set_verbose(cli.verbose > 0);
    tracing_subscriber::fmt()
        // A stage's span (`base`, `build`, `stamp`, `flash`) logs its total
        // time when it closes.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_max_level(level)
        .with_writer(std::io::stderr)
        // Seconds since start, and (for spans) busy/idle times.
        .with_timer(tracing_subscriber::fmt::time::Uptime::default())
        .init();
    if let Err(err) = signals::install() {
        eprintln!("nodeimg: error: cannot handle signals: {err}");
        return ExitCode::FAILURE;
    }
    let result = cmd::run(cli.command);
    signals::exit_if_interrupted();
    match result {
        Ok(code) => code,
        Err(err) if closed_pipe(&err) => signals::exit_on_closed_pipe(),
        Err(err) => {
            eprintln!("nodeimg: error: {}", one_line(&err));
            exit::classify(&err).into()
        }
    }
}

/// Whether the error is stdout's reader going away (`| head`): a quiet end,
/// not a failure to report.
fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The context chain joined with ": ", skipping causes whose text the line
/// already carries (library errors embed their I/O source in their message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let mut text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        // "a.img: a.img: too large": a cause that starts with a path the
        // line already names keeps only its reason.
        if let Some((head, rest)) = text.split_once(": ") {
            if !head.is_empty() && line.contains(head) {
                text = rest.to_string();
            }
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
