//! `nodeimg devices`: list the disks a card could be written to.

use clap::Args;
use flasher::policy::{self, human};
use serde_json::json;
use std::process::ExitCode;

/// List candidate target disks: removable and external ones by default.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Also list fixed and system disks, with the reasons they would be refused.
    #[arg(long)]
    pub all: bool,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<ExitCode> {
    let disks = flasher::devices::list()?;
    let opts = policy::Options::default();
    let shown: Vec<_> = disks
        .iter()
        .map(|d| (d, policy::refusals(d, None, opts)))
        .filter(|(d, why)| {
            args.all || (d.removable && d.system_reasons().is_empty() && why.is_empty())
        })
        .collect();
    if args.json {
        let v: Vec<_> = shown
            .iter()
            .map(|(d, why)| {
                let mut o = serde_json::to_value(d).unwrap_or_default();
                o["refusals"] = json!(why);
                o
            })
            .collect();
        outln!("{}", serde_json::Value::Array(v));
        return Ok(ExitCode::SUCCESS);
    }
    if shown.is_empty() {
        notice!(
            "no removable disk found{}",
            if args.all {
                ""
            } else {
                " (--all lists fixed and system disks too)"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<14} {:>10} {:<9} {:<9} {:<24} {:<28} STATUS",
        "DEVICE",
        "SIZE",
        "TRANSPORT",
        "REMOVABLE",
        "MODEL",
        "MOUNTED"
    );
    for (d, why) in shown {
        let size = human(d.size);
        let size = size.split(" (").next().unwrap_or(&size).to_string();
        let model = [d.vendor.as_deref(), d.model.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let mounted: Vec<&str> = d.mounts.iter().map(|m| m.mountpoint.as_str()).collect();
        outln!(
            "{:<14} {:>10} {:<9} {:<9} {:<24} {:<28} {}",
            d.path,
            size,
            d.transport.to_string(),
            if d.removable { "yes" } else { "no" },
            if model.is_empty() { "-" } else { &model },
            if mounted.is_empty() {
                "-".to_string()
            } else {
                mounted.join(",")
            },
            if why.is_empty() {
                "ok".to_string()
            } else {
                format!("refused: {}", why.join("; "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
