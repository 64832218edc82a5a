//! Memory and CPU of backend processes, read from `/proc` when asked (a scrape, the admin
//! page), never kept.
//!
//! A backend runs in its own process group (its pid is the group id), with whatever it starts
//! (the kernels of an editor): a backend's usage is that of its whole group, from one pass
//! over `/proc/*/stat` for all backends at once.

use std::collections::HashMap;

/// What one process group uses now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Usage {
    /// Resident memory, bytes.
    pub(crate) resident_bytes: u64,
    /// User and system CPU time since the processes started, seconds.
    pub(crate) cpu_seconds: f64,
}

/// The usage of each of the process groups `groups` (by group id) that has a process now.
pub(crate) fn group_usage(groups: impl IntoIterator<Item = u32>) -> HashMap<u32, Usage> {
    let mut usage: HashMap<u32, Usage> = HashMap::new();
    let wanted: Vec<u32> = groups.into_iter().collect();
    if wanted.is_empty() {
        return usage;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return usage;
    };
    let page = page_size();
    let ticks = clock_ticks();
    for entry in entries.flatten() {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        // Processes come and go during the pass: one that is gone is skipped.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(fields) = parse_stat(&stat) else {
            continue;
        };
        if wanted.contains(&fields.group) {
            let total = usage.entry(fields.group).or_default();
            total.resident_bytes += fields.resident_pages.saturating_mul(page);
            total.cpu_seconds += fields.cpu_ticks as f64 / ticks;
        }
    }
    usage
}

/// The fields of `/proc/PID/stat` used here.
#[derive(Debug, PartialEq)]
struct StatFields {
    group: u32,
    cpu_ticks: u64,
    resident_pages: u64,
}

/// `pid (comm) state ppid pgrp … utime(14) stime(15) … rss(24) …`; the command name may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<StatFields> {
    let after = stat.rsplit_once(')')?.1;
    // `after` starts with the state, field 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(StatFields {
        group: u32::try_from(field(5)?).ok()?,
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        resident_pages: field(24)?,
    })
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096)
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&ticks| ticks > 0)
        .map_or(100.0, |ticks| ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line = "4242 (py (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    12345 1000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(line),
            Some(StatFields {
                group: 4242,
                cpu_ticks: 300,
                resident_pages: 2560,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_group_uses_memory_and_cpu() {
        let group = nix::unistd::getpgrp().as_raw() as u32;
        let usage = group_usage([group]);
        let ours = usage
            .get(&group)
            .expect("this test runs in a process group");
        assert!(ours.resident_bytes > 1024 * 1024, "{ours:?}");
        assert!(ours.cpu_seconds >= 0.0, "{ours:?}");
        assert!(group_usage([]).is_empty());
    }
}
