//! Boots the selected nodes together and collects their first-boot
//! results: one QEMU per node, each console read on a thread of its own
//! (to the node's log file, and to the terminal with `console`), report
//! lines parsed, and the guests powered off when every expected unit has
//! reported a result, at the timeout, or when `stop` is set (a signal).

use crate::bootspec::{self, Override};
use crate::dhcp::Server;
use crate::dhcp_plan::{self, NodeNet};
use crate::disk::{self, DiskSource};
use crate::lan::{self, Hub};
use crate::qemu::{self, Accel, GuestSpec, Nic};
use crate::report::{self, Report, Status};
use crate::uboot;
use anyhow::{Context, Result};
use pipeline::customise::Op;
use serde::Serialize;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The unit every stamped node runs.
pub const FIRSTBOOT: &str = "nodeimg-firstboot";
/// The role bootstrap, when the node has one enabled and not yet done.
pub const BOOTSTRAP: &str = "nodeimg-bootstrap";

/// One node to boot.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub disk: DiskSource,
    /// Deferred secrets to apply into the throw-away disk.
    pub ops: Vec<Op>,
}

/// How to run.
pub struct Options<'a> {
    pub timeout: Duration,
    pub console: bool,
    pub log_dir: PathBuf,
    pub kernel: Override,
    /// Give the one node's console to the terminal; nothing is parsed.
    pub shell: bool,
    /// A user-mode NIC besides the LAN (DHCP, the host's network).
    pub uplink: bool,
    /// Load extlinux.conf's kernel directly even when U-Boot is installed.
    pub direct: bool,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Wait for the first-boot check only, not for role bootstraps.
    pub firstboot_only: bool,
    /// Set by the signal path: stop at once, leaving nothing behind.
    pub stop: &'a AtomicBool,
    /// Progress lines (stderr).
    pub progress: &'a dyn Fn(&str),
}

/// A unit's result on one node.
#[derive(Debug, Clone, Serialize)]
pub struct UnitResult {
    pub unit: String,
    /// `ok`, `fail`, or `none` (no result before the timeout).
    pub result: String,
    /// Seconds from power-on to the result.
    pub seconds: Option<f64>,
    /// The last report's message.
    pub msg: String,
    /// The unit's report lines, last ones.
    pub reports: Vec<Report>,
}

/// One node's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct NodeResult {
    pub node: String,
    /// `ok`, `failed` (booted, a unit failed or did not finish), `no-boot`
    /// (no report line at all).
    pub outcome: &'static str,
    /// Seconds from power-on to the first-boot check's result.
    pub boot_seconds: Option<f64>,
    pub boot: String,
    pub units: Vec<UnitResult>,
    /// The last console lines (for a node that failed or did not boot).
    pub last_lines: Vec<String>,
    pub log: PathBuf,
    /// QEMU's exit status when it ended by itself before the end.
    pub qemu_exit: Option<String>,
    /// The node's LAN address with its prefix: the cluster file's, or the
    /// lease the LAN's DHCP server holds for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `static`, `dhcp` (the guest took its lease), or `dhcp-not-taken`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_from: Option<&'static str>,
}

enum Event {
    Line(usize, String),
    Eof(usize),
}

struct Guest {
    name: String,
    child: Child,
    started: Instant,
    qmp: PathBuf,
    units: Vec<UnitState>,
    last: VecDeque<String>,
    seen_report: bool,
    ended: Option<String>,
    log: PathBuf,
    boot: String,
}

struct UnitState {
    unit: String,
    reports: VecDeque<Report>,
    result: Option<(Status, Duration)>,
}

const KEEP_LINES: usize = 20;

/// Boots `nodes` and returns their results in order.
pub fn run(nodes: &[NodeSpec], opts: &Options) -> Result<Vec<NodeResult>> {
    let qemu_bin = qemu::find()?;
    let accel = Accel::detect();
    std::fs::create_dir_all(&opts.log_dir)
        .with_context(|| format!("creating {}", opts.log_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("nodeimg-boot.")
        .tempdir()
        .context("creating a temporary directory")?;
    // A kernel package is unpacked once for every node, into `tmp`.
    let kernel_pkg = match &opts.kernel.package {
        Some(deb) => {
            (opts.progress)(&format!("unpacking the kernel package {}", deb.display()));
            let p = crate::kernel_pkg::unpack(deb, &tmp.path().join("kernel-pkg"))?;
            (opts.progress)(&format!("kernel package {}", p.describe()));
            Some(p)
        }
        None => None,
    };
    let mut prepared = Vec::new();
    let mut nets = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if opts.stop.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        (opts.progress)(&format!("{}: preparing its throw-away disk", n.name));
        let dir = tmp.path().join(format!("n{i}"));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let disk_path = dir.join("disk.img");
        disk::prepare(&n.disk, &n.ops, &disk_path).with_context(|| format!("node {}", n.name))?;
        let image = disk::open(&disk_path)?;
        let kernel = match &kernel_pkg {
            Some(p) => p
                .boot_override(&image, &opts.kernel, &dir)
                .with_context(|| format!("node {}", n.name))?,
            None => opts.kernel.clone(),
        };
        let plan =
            bootspec::plan(&image, &kernel, &dir).with_context(|| format!("node {}", n.name))?;
        // Without U-Boot installed (or with --direct, or too little
        // memory for it), the kernel that extlinux.conf names is loaded
        // directly.
        let firmware = if plan.extlinux && !opts.direct {
            uboot::firmware(&dir, opts.memory_mib)?
        } else {
            None
        };
        if firmware.is_some() {
            drop(image);
            disk::apply(&disk_path, &[bootspec::console_op()])?;
        }
        let image = disk::open(&disk_path)?;
        let list = image.read(pipeline::templates::FIRSTBOOT_LIST_PATH)?;
        let list = list.as_deref().map(String::from_utf8_lossy);
        nets.push(NodeNet::from_list(&n.name, lan::mac(i, 0), list.as_deref()));
        let mut expected = vec![FIRSTBOOT.to_string()];
        if !opts.firstboot_only
            && image
                .stat("/etc/systemd/system/multi-user.target.wants/nodeimg-bootstrap.service")?
                .is_some()
            && image.stat(pipeline::templates::DONE_FLAG)?.is_none()
        {
            expected.push(BOOTSTRAP.to_string());
        }
        prepared.push((dir, disk_path, plan, expected, firmware));
    }
    let lan_dir = tmp.path().join("lan");
    std::fs::create_dir(&lan_dir).with_context(|| format!("creating {}", lan_dir.display()))?;
    let leases = if nodes.len() > 1 {
        dhcp_plan::plan(&nets)?.map(|p| if opts.uplink { p.without_routers() } else { p })
    } else {
        None
    };
    if let Some(plan) = &leases {
        for (net, (_, disk_path, ..)) in nets.iter().zip(&prepared) {
            let ops = plan.peer_ops(net);
            if !ops.is_empty() {
                disk::apply(disk_path, &ops)?;
            }
        }
        (opts.progress)(&format!(
            "LAN: DHCP server at {} on {}; leases: {}",
            plan.server,
            plan.subnet,
            plan.leases
                .iter()
                .map(|l| format!("{} {}", l.name, l.addr))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let (hub, ports) = if nodes.len() > 1 {
        let (h, p) = Hub::start(&lan_dir, nodes.len(), leases.map(Server::new))?;
        (Some(h), p)
    } else {
        (None, Vec::new())
    };

    let (tx, rx) = mpsc::channel();
    let mut guests: Vec<Guest> = Vec::new();
    let result = (|| -> Result<()> {
        for (i, (n, (dir, disk_path, plan, expected, firmware))) in
            nodes.iter().zip(&prepared).enumerate()
        {
            let mut nics = Vec::new();
            if let Some(p) = ports.get(i) {
                nics.push((
                    Nic::Lan {
                        local: p.guest.clone(),
                        remote: p.hub.clone(),
                    },
                    lan::mac(i, 0),
                ));
            }
            if opts.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if opts.uplink || nodes.len() == 1 {
                // A lone node still gets a NIC, so its network units come up.
                nics.push((Nic::Uplink, lan::mac(i, 1)));
            }
            let spec = GuestSpec {
                disk: disk_path.clone(),
                kernel: firmware.is_none().then(|| plan.kernel.clone()),
                initrd: plan.initrd.clone(),
                append: plan.append.clone(),
                firmware: firmware.clone(),
                memory_mib: opts.memory_mib,
                cpus: opts.cpus,
                nics,
                qmp: dir.join("qmp"),
                interactive: opts.shell,
            };
            let log = opts.log_dir.join(format!("{}.log", n.name));
            let mut cmd = Command::new(&qemu_bin);
            cmd.args(qemu::args(&spec, accel));
            if opts.shell {
                cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
            } else {
                cmd.stdin(Stdio::null()).stdout(Stdio::piped());
            }
            cmd.stderr(Stdio::piped());
            die_with_parent(&mut cmd);
            let how = match firmware {
                Some(u) => format!("U-Boot {} reading {}", u.bios.display(), plan.from),
                None => format!(
                    "kernel{} from {}",
                    if plan.initrd.is_some() {
                        " and initrd"
                    } else {
                        ""
                    },
                    plan.from
                ),
            };
            (opts.progress)(&format!("{}: booting ({}, {how})", n.name, accel.name()));
            let mut child = cmd
                .spawn()
                .with_context(|| format!("starting {}", qemu_bin.display()))?;
            let logf = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            if let Some(out) = child.stdout.take() {
                let tx = tx.clone();
                let mut logf = logf.try_clone().context("log file")?;
                let (echo, name) = (opts.console, n.name.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(out);
                    let mut buf = Vec::new();
                    while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                        let _ = logf.write_all(&buf);
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        if echo {
                            eprintln!("[{name}] {line}");
                        }
                        buf.clear();
                        if tx.send(Event::Line(i, line)).is_err() {
                            break;
                        }
                    }
                    let _ = tx.send(Event::Eof(i));
                });
            }
            if let Some(err) = child.stderr.take() {
                let mut logf = logf.try_clone().context("log file")?;
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        let _ = writeln!(logf, "qemu: {line}");
                        let _ = tx.send(Event::Line(i, format!("qemu: {line}")));
                    }
                });
            }
            guests.push(Guest {
                name: n.name.clone(),
                child,
                started: Instant::now(),
                qmp: spec.qmp.clone(),
                units: expected
                    .iter()
                    .map(|u| UnitState {
                        unit: u.clone(),
                        reports: VecDeque::new(),
                        result: None,
                    })
                    .collect(),
                last: VecDeque::new(),
                seen_report: false,
                ended: None,
                log,
                boot: if firmware.is_some() {
                    format!("u-boot, {}", plan.from)
                } else {
                    format!("direct, {}", plan.from)
                },
            });
        }
        drop(tx);
        if opts.shell {
            for g in &mut guests {
                let st = g.child.wait().context("waiting for QEMU")?;
                g.ended = Some(st.to_string());
            }
            return Ok(());
        }
        watch(&mut guests, &rx, opts);
        Ok(())
    })();
    // Whatever happened: no guest outlives this function.
    let grace = if opts.stop.load(Ordering::SeqCst) || result.is_err() {
        Duration::ZERO
    } else {
        Duration::from_secs(5)
    };
    power_off(&mut guests, grace);
    let server = hub.and_then(Hub::finish);
    result?;
    drop(tmp);
    let mut results: Vec<NodeResult> = guests.iter().map(outcome).collect();
    for (r, net) in results.iter_mut().zip(&nets) {
        (r.address, r.address_from) = address(net, server.as_ref());
    }
    Ok(results)
}

/// A node's LAN address for the table: static, or its lease.
fn address(net: &NodeNet, server: Option<&Server>) -> (Option<String>, Option<&'static str>) {
    if let dhcp_plan::Address::Static(a) = net.address {
        return (Some(a.to_string()), Some("static"));
    }
    match server.and_then(|s| s.report().into_iter().find(|l| l.node == net.name)) {
        Some(l) => (
            Some(l.address),
            Some(if l.acked { "dhcp" } else { "dhcp-not-taken" }),
        ),
        None => (None, None),
    }
}

/// Reads events until every guest is done, the timeout, or `stop`.
fn watch(guests: &mut [Guest], rx: &mpsc::Receiver<Event>, opts: &Options) {
    let deadline = Instant::now() + opts.timeout;
    loop {
        if opts.stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return;
        }
        if guests.iter().all(|g| g.ended.is_some() || done(g)) {
            return;
        }
        let ev = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => ev,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        match ev {
            Event::Line(i, line) => {
                let g = &mut guests[i];
                if let Some(r) = report::parse(&line) {
                    g.seen_report = true;
                    let at = g.started.elapsed();
                    if let Some(u) = g.units.iter_mut().find(|u| u.unit == r.unit) {
                        if u.result.is_none() && r.status.is_final() {
                            u.result = Some((r.status, at));
                            (opts.progress)(&format!(
                                "{}: {} {} after {:.0}s{}",
                                g.name,
                                u.unit,
                                if r.status == Status::Ok {
                                    "ok"
                                } else {
                                    "FAILED"
                                },
                                at.as_secs_f64(),
                                if r.status == Status::Ok {
                                    String::new()
                                } else {
                                    format!(": {}", r.msg)
                                }
                            ));
                        }
                        if u.reports.len() == KEEP_LINES {
                            u.reports.pop_front();
                        }
                        u.reports.push_back(r);
                    }
                }
                if g.last.len() == KEEP_LINES {
                    g.last.pop_front();
                }
                g.last.push_back(line);
            }
            Event::Eof(i) => {
                let g = &mut guests[i];
                if let Ok(Some(st)) = g.child.try_wait() {
                    g.ended = Some(st.to_string());
                } else {
                    g.ended = Some("closed its console".into());
                }
            }
        }
    }
}

fn done(g: &Guest) -> bool {
    g.units.iter().all(|u| u.result.is_some())
}

/// Asks every guest to power off, waits up to `grace`, then kills and
/// reaps whatever still runs.
fn power_off(guests: &mut [Guest], grace: Duration) {
    if !grace.is_zero() {
        for g in guests.iter() {
            qemu::powerdown(&g.qmp);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until
            && guests
                .iter_mut()
                .any(|g| matches!(g.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for g in guests.iter_mut() {
        if matches!(g.child.try_wait(), Ok(None)) {
            let _ = g.child.kill();
        }
        let _ = g.child.wait();
    }
}

/// QEMU dies with nodeimg even when nodeimg is killed outright.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

fn outcome(g: &Guest) -> NodeResult {
    let units: Vec<UnitResult> = g
        .units
        .iter()
        .map(|u| UnitResult {
            unit: u.unit.clone(),
            result: match u.result {
                Some((Status::Ok, _)) => "ok",
                Some(_) => "fail",
                None => "none",
            }
            .into(),
            seconds: u.result.map(|(_, d)| round(d)),
            // The line that decided the result (a bootstrap goes on
            // reporting its retries after a failure), else the latest.
            msg: u
                .result
                .and_then(|(st, _)| u.reports.iter().rev().find(|r| r.status == st))
                .or(u.reports.back())
                .map(|r| r.msg.clone())
                .unwrap_or_default(),
            reports: u.reports.iter().cloned().collect(),
        })
        .collect();
    let ok = units.iter().all(|u| u.result == "ok");
    let outcome = if ok {
        "ok"
    } else if g.seen_report {
        "failed"
    } else {
        "no-boot"
    };
    NodeResult {
        node: g.name.clone(),
        outcome,
        boot_seconds: units
            .iter()
            .find(|u| u.unit == FIRSTBOOT)
            .and_then(|u| u.seconds),
        boot: g.boot.clone(),
        last_lines: if ok {
            Vec::new()
        } else {
            g.last.iter().cloned().collect()
        },
        units,
        log: g.log.clone(),
        qemu_exit: g.ended.clone(),
        address: None,
        address_from: None,
    }
}

fn round(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// The result table for a terminal.
pub fn table(results: &[NodeResult]) -> String {
    let mut units: Vec<&str> = Vec::new();
    for r in results {
        for u in &r.units {
            if !units.contains(&u.unit.as_str()) {
                units.push(&u.unit);
            }
        }
    }
    let w = results
        .iter()
        .map(|r| r.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!("{:w$}  {:>6}  {:8}", "NODE", "BOOT", "RESULT");
    // The address column only when some node has one (a LAN of several).
    let aw = results
        .iter()
        .filter_map(address_cell)
        .map(|a| a.len())
        .max();
    if let Some(aw) = aw {
        s.push_str(&format!("  {:aw$}", "ADDRESS"));
    }
    for u in &units {
        s.push_str(&format!("  {u}"));
    }
    s.push('\n');
    for r in results {
        let boot = r
            .boot_seconds
            .map(|b| format!("{b:.0}s"))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!("{:w$}  {:>6}  {:8}", r.node, boot, r.outcome));
        if let Some(aw) = aw {
            let a = address_cell(r).unwrap_or_else(|| "-".into());
            s.push_str(&format!("  {a:aw$}"));
        }
        for u in &units {
            let v = r
                .units
                .iter()
                .find(|x| x.unit == *u)
                .map(|x| x.result.as_str())
                .unwrap_or("-");
            s.push_str(&format!("  {v:w2$}", w2 = u.len()));
        }
        s.push('\n');
    }
    for r in results.iter().filter(|r| r.outcome != "ok") {
        s.push('\n');
        for u in r.units.iter().filter(|u| u.result != "ok") {
            match u.result.as_str() {
                "fail" => s.push_str(&format!("{}: {} failed: {}\n", r.node, u.unit, u.msg)),
                _ => s.push_str(&format!("{}: {} gave no result\n", r.node, u.unit)),
            }
            for rep in &u.reports {
                s.push_str(&format!(
                    "  {} step={} attempt={} {}\n",
                    serde_json::to_value(rep.status)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    rep.step,
                    rep.attempt,
                    rep.msg
                ));
            }
        }
        s.push_str(&format!(
            "{}: last console lines ({}):\n",
            r.node,
            r.log.display()
        ));
        for l in &r.last_lines {
            s.push_str(&format!("  {l}\n"));
        }
    }
    s
}

/// `10.77.0.100/24 (dhcp)`.
fn address_cell(r: &NodeResult) -> Option<String> {
    Some(format!("{} ({})", r.address.as_ref()?, r.address_from?))
}

/// Where the logs go by default.
pub fn default_log_dir() -> PathBuf {
    Path::new("nodeimg-boot-logs").to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, result: &str, msg: &str) -> UnitResult {
        UnitResult {
            unit: name.into(),
            result: result.into(),
            seconds: Some(12.0),
            msg: msg.into(),
            reports: vec![Report {
                node: "n0".into(),
                unit: name.into(),
                status: if result == "ok" {
                    Status::Ok
                } else {
                    Status::Fail
                },
                step: "-".into(),
                attempt: 1,
                msg: msg.into(),
            }],
        }
    }

    #[test]
    fn the_table_names_the_failing_unit_and_its_lines() {
        let r = vec![
            NodeResult {
                node: "n0".into(),
                outcome: "failed",
                boot_seconds: Some(41.0),
                boot: "direct".into(),
                units: vec![
                    unit(FIRSTBOOT, "ok", "first boot as stamped"),
                    unit(BOOTSTRAP, "fail", "not installed in this image: kubeadm"),
                ],
                last_lines: vec!["[  OK  ] Reached target multi-user.target".into()],
                log: "logs/n0.log".into(),
                qemu_exit: None,
                address: None,
                address_from: None,
            },
            NodeResult {
                node: "n1".into(),
                outcome: "no-boot",
                boot_seconds: None,
                boot: "direct".into(),
                units: vec![unit(FIRSTBOOT, "none", "")],
                last_lines: vec![],
                log: "logs/n1.log".into(),
                qemu_exit: None,
                address: None,
                address_from: None,
            },
        ];
        let t = table(&r);
        let mut lines = t.lines();
        assert_eq!(
            lines.next(),
            Some("NODE    BOOT  RESULT    nodeimg-firstboot  nodeimg-bootstrap")
        );
        assert_eq!(
            lines.next(),
            Some("n0       41s  failed    ok                 fail             ")
        );
        assert!(t.contains("n0: nodeimg-bootstrap failed: not installed in this image: kubeadm\n"));
        assert!(t.contains("  [  OK  ] Reached target multi-user.target\n"));
        assert!(t.contains("n1: nodeimg-firstboot gave no result\n"));
    }

    #[test]
    fn the_table_shows_static_addresses_and_leases() {
        let node = |name: &str, addr: Option<(&str, &'static str)>| NodeResult {
            node: name.into(),
            outcome: "ok",
            boot_seconds: Some(30.0),
            boot: "direct".into(),
            units: vec![unit(FIRSTBOOT, "ok", "first boot as stamped")],
            last_lines: vec![],
            log: "logs/x.log".into(),
            qemu_exit: None,
            address: addr.map(|a| a.0.into()),
            address_from: addr.map(|a| a.1),
        };
        let r = vec![
            node("alpha", Some(("10.77.0.1/24", "static"))),
            node("beta", Some(("10.77.0.100/24", "dhcp"))),
            node("gamma", None),
        ];
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "NODE     BOOT  RESULT    ADDRESS                nodeimg-firstboot",
                "alpha     30s  ok        10.77.0.1/24 (static)  ok               ",
                "beta      30s  ok        10.77.0.100/24 (dhcp)  ok               ",
                "gamma     30s  ok        -                      ok               ",
            ]
        );
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j[1]["address"], "10.77.0.100/24");
        assert_eq!(j[1]["address_from"], "dhcp");
        assert!(j[2].get("address").is_none());
    }
}
