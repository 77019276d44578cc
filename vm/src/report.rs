//! The first-boot report line (docs/firstboot.md), parsed from console
//! bytes. Console output is untrusted: kernel messages interleave with
//! report lines, serial lines carry `\r` and control bytes, and a guest may
//! print anything; parsing never panics and ignores what is not a report.

use serde::Serialize;

/// What every report line starts with (after any noise on the line).
pub const MARKER: &str = "nodeimg-report: v1 ";

/// A report's status field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Start,
    Step,
    Wait,
    Ok,
    Fail,
}

impl Status {
    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "start" => Status::Start,
            "step" => Status::Step,
            "wait" => Status::Wait,
            "ok" => Status::Ok,
            "fail" => Status::Fail,
            _ => return None,
        })
    }

    /// `ok` and `fail` end an attempt.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Ok | Status::Fail)
    }
}

/// One parsed report line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub node: String,
    pub unit: String,
    pub status: Status,
    pub step: String,
    pub attempt: u32,
    pub msg: String,
}

/// Parses one console line: `None` unless it carries a well-formed v1
/// report (anything before the marker is ignored — a console line can
/// begin with the tail of a kernel message).
pub fn parse(line: &str) -> Option<Report> {
    let at = line.find(MARKER)?;
    let rest = line[at + MARKER.len()..].trim_end_matches(['\r', '\n']);
    let (node, rest) = field(rest, "node")?;
    let (unit, rest) = field(rest, "unit")?;
    let (status, rest) = field(rest, "status")?;
    let (step, rest) = field(rest, "step")?;
    let (attempt, rest) = field(rest, "attempt")?;
    let msg = rest.strip_prefix("msg=")?;
    Some(Report {
        node: node.to_string(),
        unit: unit.to_string(),
        status: Status::parse(status)?,
        step: step.to_string(),
        attempt: attempt.parse().ok()?,
        msg: msg.chars().filter(|c| !c.is_control()).collect(),
    })
}

/// `NAME=VALUE ` at the start of `s`: the value (one non-empty word) and the
/// rest after the single space.
fn field<'a>(s: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let s = s.strip_prefix(name)?.strip_prefix('=')?;
    let (value, rest) = s.split_once(' ')?;
    (!value.is_empty() && !value.contains(char::is_control)).then_some((value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_example_parses() {
        let r = parse("nodeimg-report: v1 node=node0 unit=nodeimg-bootstrap status=wait step=join attempt=1 msg=waiting for the server at 192.168.1.10:6443\r")
            .expect("a report");
        assert_eq!(r.node, "node0");
        assert_eq!(r.unit, "nodeimg-bootstrap");
        assert_eq!(r.status, Status::Wait);
        assert_eq!(r.step, "join");
        assert_eq!(r.attempt, 1);
        assert_eq!(r.msg, "waiting for the server at 192.168.1.10:6443");
    }

    #[test]
    fn noise_before_the_marker_and_an_empty_message() {
        let r = parse("[   12.3] random: crng init donenodeimg-report: v1 node=a unit=u status=ok step=- attempt=2 msg=")
            .expect("a report");
        assert_eq!((r.status, r.attempt, r.msg.as_str()), (Status::Ok, 2, ""));
        assert!(r.status.is_final());
    }

    #[test]
    fn malformed_lines_are_ignored() {
        for l in [
            "",
            "nodeimg-report: v2 node=a unit=u status=ok step=- attempt=1 msg=x",
            "nodeimg-report: v1 node=a unit=u status=done step=- attempt=1 msg=x",
            "nodeimg-report: v1 node=a unit=u status=ok step=- attempt=x msg=x",
            "nodeimg-report: v1 node= unit=u status=ok step=- attempt=1 msg=x",
            "nodeimg-report: v1 unit=u node=a status=ok step=- attempt=1 msg=x",
            "nodeimg-report: v1 node=a unit=u status=ok step=- attempt=1",
            "nodeimg-report: v1 node=a  unit=u status=ok step=- attempt=1 msg=x",
        ] {
            assert_eq!(parse(l), None, "{l:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_console_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            for line in text.split('\n') {
                let _ = parse(line);
            }
        }

        #[test]
        fn a_report_after_noise_round_trips(
            noise in "[^\n]{0,40}",
            node in "[a-z0-9-]{1,20}",
            attempt in 1u32..1000,
            msg in "[ -~]{0,80}",
        ) {
            let line = format!("{noise}nodeimg-report: v1 node={node} unit=nodeimg-firstboot status=fail step=identity attempt={attempt} msg={msg}");
            let r = parse(&line).expect("a report");
            prop_assert_eq!(r.node, node);
            prop_assert_eq!(r.attempt, attempt);
            prop_assert_eq!(r.status, Status::Fail);
            prop_assert_eq!(r.msg, msg);
        }
    }
}
