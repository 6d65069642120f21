//! The process table as `/proc` shows it: who is whose parent, which group and session each
//! process is in, and when it started.
//!
//! A server's processes do not all stay in its process group: a helper started with `setsid`, a
//! daemon that double-forks, a worker that calls `setsid()` all leave it. They stay *descendants*
//! of the process that started them (or of the nearest child subreaper, the guardian, once their
//! parent is gone), so following parent links from the generation's first process finds them.
//! The start time tells a process from a later one that reuses its pid.

use std::collections::{BTreeMap, BTreeSet};

/// One process of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcEntry {
    /// The process id.
    pub(crate) pid: u32,
    /// Its parent.
    pub(crate) ppid: u32,
    /// Its process group.
    pub(crate) pgrp: u32,
    /// Its session.
    pub(crate) session: u32,
    /// Whether it has exited and waits to be reaped (a zombie holds no memory and no socket).
    pub(crate) zombie: bool,
    /// When it started, in clock ticks since boot: with the pid, it names one process for good.
    pub(crate) start_time: u64,
}

/// Parses `/proc/<pid>/stat` (the whole line, pid first).
pub(crate) fn parse_stat(pid: u32, stat: &str) -> Option<ProcEntry> {
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after the name, counted from 0: state, ppid, pgrp, session, ..., starttime (19).
    let state = fields.first()?.chars().next()?;
    Some(ProcEntry {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        zombie: state == 'Z' || state == 'X',
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The entry of one process, or `None` when it is gone.
pub(crate) fn entry(pid: u32) -> Option<ProcEntry> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &stat)
}

/// Every process visible in `/proc` now (zombies included).
pub(crate) fn snapshot() -> Vec<ProcEntry> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(entry)
        .collect()
}

/// The descendants of `root` in `table` (not `root` itself), children before grandchildren.
pub(crate) fn descendants(table: &[ProcEntry], root: u32) -> Vec<ProcEntry> {
    let mut children: BTreeMap<u32, Vec<&ProcEntry>> = BTreeMap::new();
    for process in table {
        if process.pid != process.ppid {
            children.entry(process.ppid).or_default().push(process);
        }
    }
    let mut found = Vec::new();
    let mut visited = BTreeSet::from([root]);
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if visited.insert(child.pid) {
                found.push(**child);
                frontier.push(child.pid);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, ppid: u32) -> ProcEntry {
        ProcEntry {
            pid,
            ppid,
            pgrp: pid,
            session: pid,
            zombie: false,
            start_time: 1,
        }
    }

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat =
            "1234 (my (odd) name) S 1 1234 1200 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0";
        let entry = parse_stat(1234, stat).expect("parsed");
        assert_eq!(
            (entry.ppid, entry.pgrp, entry.session, entry.start_time),
            (1, 1234, 1200, 98765)
        );
        assert!(!entry.zombie);
        assert!(parse_stat(1, "garbage").is_none());
        assert!(parse_stat(1, "1 (short) S 1 1").is_none());
    }

    #[test]
    fn descendants_follow_parent_links_at_any_depth() {
        let table = [
            process(10, 1),
            process(11, 10),
            process(12, 11),
            process(13, 10),
            process(20, 1),
            process(21, 20),
        ];
        let mut found: Vec<u32> = descendants(&table, 10).iter().map(|p| p.pid).collect();
        found.sort_unstable();
        assert_eq!(found, vec![11, 12, 13]);
        assert!(descendants(&table, 12).is_empty());
    }

    #[test]
    fn our_own_entry_is_found_with_a_start_time() {
        let me = entry(std::process::id()).expect("we exist");
        assert!(me.start_time > 0);
        assert!(snapshot().iter().any(|p| p.pid == me.pid));
    }
}
