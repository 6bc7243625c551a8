//! Flags → plain, validated values. Nothing here opens a file or a socket: a bad flag is
//! reported (one line naming the flag) before any packet is read.

use crate::clock::Timer;
use crate::edit::EditFlags;
use crate::pipeline::StopLimits;
use clap::{ArgGroup, Parser};
use std::path::PathBuf;
use std::time::Duration;
use tcpclone::pace::{CatchUp, Timing, CATCH_UP_MAX_DEBT_NS, CATCH_UP_SHARE};
use tcpclone::rewrite::RewriteOptions;

/// `replay`: tcpreplay and tcprewrite in one tool.
#[derive(Debug, Parser)]
#[command(
    name = "replay",
    version = tcpclone::build::LONG_VERSION,
    about = "Replay pcap/pcapng captures onto an interface, or rewrite them into a pcap file",
    group(ArgGroup::new("output").required(true).args(["intf1", "write"])),
    group(ArgGroup::new("timing").multiple(false).args(["multiplier", "pps", "mbps", "topspeed"]))
)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng, detected by content), sent in order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Interface to send on.
    #[arg(short = 'i', long = "intf1", value_name = "IFACE")]
    pub intf1: Option<String>,
    /// Write a pcap file instead of sending (tcprewrite's `-o`).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,

    /// Replay at the capture's timing sped up by this factor.
    #[arg(short = 'x', long, value_name = "F", allow_negative_numbers = true)]
    pub multiplier: Option<f64>,
    /// Replay at this many packets per second.
    #[arg(short = 'p', long, value_name = "N", allow_negative_numbers = true)]
    pub pps: Option<f64>,
    /// Replay at this many megabits per second (frame bytes).
    #[arg(short = 'M', long, value_name = "N", allow_negative_numbers = true)]
    pub mbps: Option<f64>,
    /// Replay as fast as possible.
    #[arg(short = 't', long)]
    pub topspeed: bool,
    /// Passes over the input files (0 = forever).
    #[arg(short = 'l', long = "loop", value_name = "N", default_value_t = 1)]
    pub loops: u64,
    /// Stop after this many packets.
    #[arg(short = 'L', long, value_name = "N")]
    pub limit: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Load the input files into memory before sending.
    #[arg(short = 'K', long = "preload-pcap")]
    pub preload: bool,

    /// Source IP map `CIDR:CIDR,...` (IPv6 as `[2001:db8::/64]:[...]`).
    #[arg(short = 'S', long, value_name = "MAP", conflicts_with = "pnat", action = clap::ArgAction::Append)]
    pub srcipmap: Vec<String>,
    /// Destination IP map `CIDR:CIDR,...`.
    #[arg(short = 'D', long, value_name = "MAP", conflicts_with = "pnat", action = clap::ArgAction::Append)]
    pub dstipmap: Vec<String>,
    /// Source and destination IP map `CIDR:CIDR,...`.
    #[arg(short = 'N', long, value_name = "MAP", action = clap::ArgAction::Append)]
    pub pnat: Vec<String>,
    /// Port map `80:8080,6379:16379`.
    #[arg(short = 'r', long, value_name = "MAP", action = clap::ArgAction::Append)]
    pub portmap: Vec<String>,
    /// Set the destination MAC address.
    #[arg(long = "enet-dmac", value_name = "MAC")]
    pub enet_dmac: Option<String>,
    /// Set the source MAC address.
    #[arg(long = "enet-smac", value_name = "MAC")]
    pub enet_smac: Option<String>,
    /// Add or delete an 802.1Q tag (`add` | `del`).
    #[arg(long = "enet-vlan", value_name = "add|del")]
    pub enet_vlan: Option<String>,
    /// VLAN id for `--enet-vlan add`.
    #[arg(long = "enet-vlan-tag", value_name = "N")]
    pub enet_vlan_tag: Option<u16>,
    /// 802.1Q priority for `--enet-vlan add` (0-7).
    #[arg(long = "enet-vlan-pri", value_name = "N")]
    pub enet_vlan_pri: Option<u8>,
    /// 802.1Q CFI bit for `--enet-vlan add` (0-1).
    #[arg(long = "enet-vlan-cfi", value_name = "N")]
    pub enet_vlan_cfi: Option<u8>,
    /// MTU for `--mtu-trunc` (default: the interface's, or 1500 when writing).
    #[arg(short = 'm', long, value_name = "N")]
    pub mtu: Option<u32>,
    /// Truncate frames larger than the MTU.
    #[arg(long = "mtu-trunc", conflicts_with = "tso_split")]
    pub mtu_trunc: bool,
    /// Split TCP frames larger than the MTU into MTU-sized segments.
    #[arg(long = "tso-split")]
    pub tso_split: bool,
    /// Set (`N`), raise (`+N`) or lower (`-N`) the IPv4 TTL / IPv6 hop limit.
    #[arg(long, value_name = "[+|-]N", allow_hyphen_values = true)]
    pub ttl: Option<String>,
    /// Set the IPv4 TOS / IPv6 traffic class.
    #[arg(long, value_name = "N")]
    pub tos: Option<u8>,
    /// Set the IPv6 traffic class.
    #[arg(long, value_name = "N")]
    pub tclass: Option<u8>,
    /// Recompute checksums of every packet.
    #[arg(short = 'C', long)]
    pub fixcsum: bool,
    /// Convert the link layer (`enet`: Linux cooked SLL/SLL2 or raw IP to Ethernet).
    #[arg(long, value_name = "enet")]
    pub dlt: Option<String>,

    /// Print the summary every N seconds.
    #[arg(long, value_name = "N")]
    pub stats: Option<u64>,
    /// Print the final summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics while replaying (off unless
    /// given; binds that address only).
    #[arg(long = "metrics", value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Sender threads for --topspeed (each with its own TX ring).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Send with sendmmsg batches instead of the TX ring (for comparison).
    #[arg(long = "no-tx-ring", hide = true)]
    pub no_tx_ring: bool,
    /// Paced sending under SCHED_FIFO at priority N (1-99), so other tasks on a busy machine
    /// cannot delay a packet's wake-up; needs CAP_SYS_NICE (warns and goes on without it).
    #[arg(long = "rt-priority", value_name = "N")]
    pub rt_priority: Option<i32>,
    /// When a paced sender falls behind (its CPU was taken away), each following gap repays
    /// 1/32 of the delay, and never more than this share of the gap, until back on schedule,
    /// so a stall costs one late gap and not also back-to-back ones (above 0, at most 1; 1 =
    /// back to back, as tcpreplay does). A delay of more than 10 ms is sent back to back down
    /// to 10 ms.
    #[arg(long = "catch-up", value_name = "SHARE", default_value_t = CATCH_UP_SHARE, allow_negative_numbers = true)]
    pub catch_up: f64,
    /// How a paced sender waits between packets: hybrid sleeps, then spins the last stretch
    /// (under 10 % of a core at 1,000 pps); gtod spins the whole wait, as tcpreplay does (a
    /// whole core at any rate, but no wake-up to wait for: better on a host that is slow to wake
    /// an idle CPU, such as a busy VM); nano sleeps the whole wait.
    #[arg(short = 'T', long, value_name = "TIMER", value_enum, default_value_t = Timer::Hybrid)]
    pub timer: Timer,
    /// After opening the input files, the output and the send sockets, switch to this user,
    /// keeping only CAP_NET_RAW when sending on an interface and nothing when writing a file
    /// (when started as root; otherwise only the capabilities are trimmed). Root is refused.
    #[arg(long = "user", value_name = "USER", default_value = "nobody")]
    pub user: String,
    /// Log lines (warnings, notes, errors) as `text` or `json` (one JSON object per line on
    /// standard error, for log shippers). The summary stays on standard output.
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Where the packets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Send on this interface.
    Interface(String),
    /// Write this pcap file.
    File(PathBuf),
}

/// Validated run settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Input capture files in order.
    pub files: Vec<PathBuf>,
    /// Output.
    pub target: Target,
    /// Pacing (always top speed when writing a file).
    pub timing: Timing,
    /// Loop, limit and duration.
    pub limits: StopLimits,
    /// Load inputs into memory first.
    pub preload: bool,
    /// Edit flags as given, for the rewrite module's parsers.
    pub edits: EditFlags,
    /// Periodic summary interval.
    pub stats_every: Option<Duration>,
    /// JSON summary.
    pub json: bool,
    /// --metrics.
    pub metrics: Option<std::net::SocketAddr>,
    /// Sender threads.
    pub threads: usize,
    /// Use sendmmsg instead of the TX ring.
    pub no_tx_ring: bool,
    /// SCHED_FIFO priority for the paced sender (opt-in).
    pub rt_priority: Option<i32>,
    /// How a paced sender that fell behind gets back on schedule.
    pub catch_up: CatchUp,
    /// How a paced sender waits.
    pub timer: Timer,
    /// `--user`: who the process becomes once everything is open.
    pub user: String,
    /// `--log-format json`.
    pub json_logs: bool,
}

/// A flag value that cannot be used; its message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReplayFlagError(pub String);

fn flag_err(msg: impl Into<String>) -> ReplayFlagError {
    ReplayFlagError(msg.into())
}

impl ReplayArgs {
    /// Checks the values that clap cannot and turns them into a [`Config`].
    pub fn validate(self) -> Result<Config, ReplayFlagError> {
        let target = match (self.intf1, self.write) {
            (Some(i), None) => Target::Interface(i),
            (None, Some(w)) => Target::File(w),
            _ => {
                return Err(flag_err(
                    "exactly one of -i/--intf1 and -w/--write is needed",
                ))
            }
        };
        let timing = if let Some(x) = self.multiplier {
            Timing::multiplier(x)
        } else if let Some(p) = self.pps {
            Timing::pps(p)
        } else if let Some(m) = self.mbps {
            Timing::mbps(m)
        } else if self.topspeed {
            Ok(Timing::TopSpeed)
        } else {
            Timing::multiplier(1.0)
        }
        .map_err(|e| flag_err(e.to_string()))?;
        // Writing a file is tcprewrite's job: no pacing.
        let timing = if matches!(target, Target::File(_)) {
            Timing::TopSpeed
        } else {
            timing
        };
        if self.limit == Some(0) {
            return Err(flag_err("--limit: must be at least 1"));
        }
        let duration_ns = match self.duration {
            None => None,
            Some(d) if d.is_finite() && d > 0.0 => Some((d * 1e9) as u64),
            Some(d) => {
                return Err(flag_err(format!(
                    "--duration: {d} is not a positive number of seconds"
                )))
            }
        };
        if self.threads == 0 || self.threads > 64 {
            return Err(flag_err(format!(
                "--threads: {} is not between 1 and 64",
                self.threads
            )));
        }
        if self.threads > 1 && !(timing.is_top_speed() && matches!(target, Target::Interface(_))) {
            return Err(flag_err(
                "--threads: more than one sender thread needs -t/--topspeed and -i",
            ));
        }
        if let Some(p) = self.rt_priority {
            if !(1..=99).contains(&p) {
                return Err(flag_err(format!(
                    "--rt-priority: {p} is not between 1 and 99"
                )));
            }
            if timing.is_top_speed() || !matches!(target, Target::Interface(_)) {
                return Err(flag_err(
                    "--rt-priority: only for paced sending on -i (not -t/--topspeed or -w)",
                ));
            }
        }
        if !(self.catch_up > 0.0 && self.catch_up <= 1.0) {
            return Err(flag_err(format!(
                "--catch-up: {} is not a share above 0 and at most 1",
                self.catch_up
            )));
        }
        if self.stats == Some(0) {
            return Err(flag_err("--stats: must be at least 1 second"));
        }
        let edits = EditFlags {
            rewrite: RewriteOptions {
                srcipmap: self.srcipmap,
                dstipmap: self.dstipmap,
                pnat: self.pnat,
                portmap: self.portmap,
                enet_dmac: self.enet_dmac,
                enet_smac: self.enet_smac,
                enet_vlan: self.enet_vlan,
                enet_vlan_tag: self.enet_vlan_tag,
                enet_vlan_pri: self.enet_vlan_pri,
                enet_vlan_cfi: self.enet_vlan_cfi,
                mtu: self.mtu,
                mtu_trunc: self.mtu_trunc,
                ttl: self.ttl,
                tos: self.tos,
                tclass: self.tclass,
                fixcsum: self.fixcsum,
                dlt: self.dlt,
                ..RewriteOptions::default()
            },
            tso_split: self.tso_split,
        };
        Ok(Config {
            files: self.files,
            target,
            timing,
            limits: StopLimits {
                loops: self.loops,
                limit: self.limit,
                duration_ns,
                shard: (0, 1),
            },
            preload: self.preload,
            edits,
            stats_every: self.stats.map(Duration::from_secs),
            json: self.json,
            metrics: self.metrics,
            threads: self.threads,
            no_tx_ring: self.no_tx_ring,
            rt_priority: self.rt_priority,
            catch_up: CatchUp::new(self.catch_up, CATCH_UP_MAX_DEBT_NS),
            timer: self.timer,
            user: self.user,
            json_logs: self.log_format == "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let a = ReplayArgs::try_parse_from(std::iter::once("replay").chain(args.iter().copied()))
            .map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())?;
        a.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn output_is_exactly_one_of_intf_and_write() {
        assert!(parse(&["a.pcap"]).is_err());
        let e = parse(&["-i", "eth0", "-w", "o.pcap", "a.pcap"]).unwrap_err();
        assert!(e.contains("--write") || e.contains("--intf1"), "{e}");
        assert_eq!(
            parse(&["-i", "eth0", "a.pcap"]).unwrap().target,
            Target::Interface("eth0".into())
        );
        assert_eq!(
            parse(&["-w", "o.pcap", "a.pcap"]).unwrap().target,
            Target::File("o.pcap".into())
        );
    }

    #[test]
    fn rt_priority_is_checked() {
        assert_eq!(parse(&["-i", "e", "a"]).unwrap().rt_priority, None);
        assert_eq!(
            parse(&["-i", "e", "--rt-priority", "20", "a"])
                .unwrap()
                .rt_priority,
            Some(20)
        );
        for bad in [
            &["-i", "e", "--rt-priority", "0", "a"][..],
            &["-i", "e", "--rt-priority", "100", "a"],
            &["-i", "e", "-t", "--rt-priority", "10", "a"],
            &["-w", "o", "--rt-priority", "10", "a"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("--rt-priority:"), "{e}");
        }
    }

    #[test]
    fn timer_takes_tcpreplays_names() {
        assert_eq!(parse(&["-i", "e", "a"]).unwrap().timer, Timer::Hybrid);
        assert_eq!(
            parse(&["-i", "e", "-T", "gtod", "a"]).unwrap().timer,
            Timer::Gtod
        );
        assert_eq!(
            parse(&["-i", "e", "--timer", "nano", "a"]).unwrap().timer,
            Timer::Nano
        );
        // tcpreplay's select and ioport timers are refused, naming the flag (the binary also lists the timers it takes).
        let e = parse(&["-i", "e", "-T", "select", "a"]).unwrap_err();
        assert!(e.contains("--timer") && e.contains("select"), "{e}");
    }

    #[test]
    fn catch_up_share_is_checked() {
        let c = parse(&["-i", "e", "a"]).unwrap().catch_up;
        assert_eq!(c, CatchUp::new(CATCH_UP_SHARE, CATCH_UP_MAX_DEBT_NS));
        let c = parse(&["-i", "e", "--catch-up", "1", "a"])
            .unwrap()
            .catch_up;
        assert_eq!(c, CatchUp::new(1.0, CATCH_UP_MAX_DEBT_NS));
        for bad in ["0", "-0.5", "1.5", "nan"] {
            let e = parse(&["-i", "e", "--catch-up", bad, "a"]).unwrap_err();
            assert!(e.starts_with("--catch-up:"), "{bad}: {e}");
        }
    }

    #[test]
    fn timing_flags() {
        assert_eq!(
            parse(&["-i", "e", "a"]).unwrap().timing,
            Timing::Capture { multiplier: 1.0 }
        );
        assert_eq!(
            parse(&["-i", "e", "-p", "1000", "a"]).unwrap().timing,
            Timing::Pps(1000.0)
        );
        assert_eq!(
            parse(&["-i", "e", "-M", "10", "a"]).unwrap().timing,
            Timing::Mbps(10.0)
        );
        assert_eq!(
            parse(&["-i", "e", "-x", "2", "a"]).unwrap().timing,
            Timing::Capture { multiplier: 2.0 }
        );
        assert_eq!(
            parse(&["-i", "e", "-t", "a"]).unwrap().timing,
            Timing::TopSpeed
        );
        assert!(parse(&["-i", "e", "-p", "10", "-M", "1", "a"]).is_err());
        let e = parse(&["-i", "e", "--pps", "0", "a"]).unwrap_err();
        assert!(e.starts_with("--pps"), "{e}");
        let e = parse(&["-i", "e", "--pps", "abc", "a"]).unwrap_err();
        assert!(e.contains("--pps"), "{e}");
        // Writing never paces.
        assert_eq!(
            parse(&["-w", "o", "-p", "10", "a"]).unwrap().timing,
            Timing::TopSpeed
        );
    }

    #[test]
    fn limits_and_threads() {
        let c = parse(&[
            "-i",
            "e",
            "-l",
            "0",
            "-L",
            "5",
            "--duration",
            "1.5",
            "a",
            "b",
        ])
        .unwrap();
        assert_eq!(c.limits.loops, 0);
        assert_eq!(c.limits.limit, Some(5));
        assert_eq!(c.limits.duration_ns, Some(1_500_000_000));
        assert_eq!(c.files.len(), 2);
        assert!(parse(&["-i", "e", "-L", "0", "a"])
            .unwrap_err()
            .contains("--limit"));
        assert!(parse(&["-i", "e", "--duration", "-1", "a"])
            .unwrap_err()
            .contains("--duration"));
        assert!(parse(&["-i", "e", "--threads", "2", "a"])
            .unwrap_err()
            .contains("--threads"));
        assert_eq!(
            parse(&["-i", "e", "-t", "--threads", "2", "a"])
                .unwrap()
                .threads,
            2
        );
    }

    #[test]
    fn edit_flags_pass_through_and_exclusions_hold() {
        let c = parse(&[
            "-w",
            "o",
            "--ttl",
            "-3",
            "-S",
            "198.18.0.0/16:198.19.0.0/16",
            "a",
        ])
        .unwrap();
        assert_eq!(c.edits.rewrite.ttl.as_deref(), Some("-3"));
        assert_eq!(c.edits.rewrite.srcipmap.len(), 1);
        let e = parse(&[
            "-w",
            "o",
            "-N",
            "198.18.0.0/16:198.19.0.0/16",
            "-S",
            "198.18.0.0/16:198.19.0.0/16",
            "a",
        ])
        .unwrap_err();
        assert!(e.contains("--pnat") || e.contains("--srcipmap"), "{e}");
    }
}
