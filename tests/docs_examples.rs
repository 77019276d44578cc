//! Every worked example in `docs/*.md` and `README.md` that is marked as
//! tested runs here, so the docs cannot drift from the program.
//!
//! # Marking an example
//!
//! Add `test` to the info string of its fenced block:
//!
//! - ```` ```sh test ````: the block is a bash script run with
//!   `set -euo pipefail`; it passes when it exits 0.
//! - ```` ```console test ````: lines starting with `$ ` are commands (a
//!   line ending in `\` continues on the next one); the lines after a
//!   command, up to the next `$ `, are its expected output (stdout and
//!   stderr together). They must equal what the command prints, line for
//!   line, where `…` stands for any text within a line. A command shown
//!   without output may print anything but must exit 0; one shown with
//!   output may fail (an example of a refusal shows its message).
//!
//! Blocks of one page run in order in one fresh directory, so a later block
//! can use files an earlier one made. `nodeimg` on `PATH` is the binary
//! under test, and `fixtures/` in that directory is the repository's
//! `fixtures/`. Examples that cannot run here (network, real disks) stay
//! unmarked; say so in the page next to them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A marked block: its kind, its text and where it starts.
struct Block {
    console: bool,
    text: String,
    line: usize,
}

/// The marked blocks of a Markdown page.
fn marked_blocks(page: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    // Inside a fence: the marked block being read, or `None` for an unmarked one.
    let mut inside: Option<Option<Block>> = None;
    for (i, line) in page.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (inside.take(), fence) {
            (None, false) => {}
            (None, true) => {
                let info: Vec<&str> = line.trim_start()[3..].split_whitespace().collect();
                inside = Some(info.contains(&"test").then(|| Block {
                    console: info.first() == Some(&"console"),
                    text: String::new(),
                    line: i + 1,
                }));
            }
            (Some(block), true) => blocks.extend(block),
            (Some(mut block), false) => {
                if let Some(b) = &mut block {
                    b.text.push_str(line);
                    b.text.push('\n');
                }
                inside = Some(block);
            }
        }
    }
    blocks
}

/// A console block as (command, expected output lines).
fn console_steps(text: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut continuing = false;
    for line in text.lines() {
        if continuing {
            let cmd = &mut steps.last_mut().expect("a command").0;
            cmd.push('\n');
            cmd.push_str(line);
            continuing = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push((cmd.to_string(), Vec::new()));
            continuing = cmd.ends_with('\\');
        } else if let Some(step) = steps.last_mut() {
            step.1.push(line.to_string());
        }
    }
    steps
}

/// Whether `actual` matches `expected`, where `…` matches any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn bash(dir: &Path, script: &str) -> (i32, String) {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_nodeimg"))
        .parent()
        .expect("binary directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("bash runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

const MARK: &str = "@@nodeimg-docs-step";

/// Runs one block; `Err` says what differed.
fn run_block(dir: &Path, block: &Block) -> Result<(), String> {
    if !block.console {
        let script = format!("set -euo pipefail\n{}", block.text);
        let (code, out) = bash(dir, &script);
        return match code {
            0 => Ok(()),
            _ => Err(format!("exit {code}:\n{out}")),
        };
    }
    let steps = console_steps(&block.text);
    let mut script = String::from("exec 2>&1\n");
    for (cmd, _) in &steps {
        script.push_str(cmd);
        // `$?` stays the command's own for the next step (`echo $?`).
        script.push_str(&format!(
            "\n__status=$?; printf '\\n{MARK} %d\\n' $__status; (exit $__status)\n"
        ));
    }
    let (_, out) = bash(dir, &script);
    let separator = format!("\n{MARK} ");
    let mut chunks = out.split(&separator);
    let mut printed = chunks.next().unwrap_or("").to_string();
    for (cmd, expected) in &steps {
        let Some(chunk) = chunks.next() else {
            return Err(format!("$ {cmd}\ndid not finish; output:\n{printed}"));
        };
        let (code, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let code: i32 = code.trim().parse().unwrap_or(-1);
        let actual: Vec<&str> = printed.trim_end_matches('\n').lines().collect();
        let actual: Vec<&str> = if printed.trim().is_empty() {
            vec![]
        } else {
            actual
        };
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        if expected.is_empty() {
            if code != 0 {
                return Err(format!("$ {cmd}\nexited {code}:\n{printed}"));
            }
        } else if actual.len() != expected.len()
            || !expected
                .iter()
                .zip(&actual)
                .all(|(e, a)| line_matches(e, a))
        {
            return Err(format!(
                "$ {cmd}\nexpected:\n{}\nprinted:\n{}",
                expected.join("\n"),
                actual.join("\n")
            ));
        }
        printed = rest.to_string();
    }
    Ok(())
}

fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.push(root.join("README.md"));
    pages
}

#[test]
fn every_marked_example_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    let mut ran = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read page");
        let blocks = marked_blocks(&text);
        if blocks.is_empty() {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(root.join("fixtures"), dir.path().join("fixtures"))
            .expect("link fixtures");
        for block in &blocks {
            ran += 1;
            if let Err(why) = run_block(dir.path(), block) {
                failures.push(format!(
                    "{}:{}: {why}",
                    page.strip_prefix(root).unwrap_or(&page).display(),
                    block.line
                ));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ran > 0, "no marked examples found");
}

#[test]
fn the_runner_reads_blocks_and_wildcards() {
    let page = "text\n```sh\nskipped\n```\n```console test\n$ echo a \\\n  b\na b\n$ true\n```\n";
    let blocks = marked_blocks(page);
    assert_eq!(blocks.len(), 1);
    let steps = console_steps(&blocks[0].text);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].1, vec!["a b".to_string()]);
    assert!(line_matches(
        "sha256 59…; needs …",
        "sha256 59abc; needs 12"
    ));
    assert!(!line_matches("a…z", "a b c"));
    let dir = tempfile::tempdir().unwrap();
    assert!(run_block(dir.path(), &blocks[0]).is_ok());
    let bad = Block {
        console: true,
        text: "$ echo 1\n2\n".into(),
        line: 1,
    };
    assert!(run_block(dir.path(), &bad).is_err());
}
