//! The window journal: an append-only file beside the store where a receive window's
//! commands are written before their downlink is handed over.
//!
//! Marking commands `scheduled` in the store before the hand-over is what keeps a
//! `kill -9` from sending them twice, but a store write is a round trip to SQLite's
//! thread: 0.3 ms at best, and 2-5 ms whenever that thread, or the task waiting for it,
//! has to be woken on an idle virtual CPU. One `write(2)` to this file gives the same
//! guarantee in microseconds: the page cache survives the process (as it does for
//! SQLite's WAL at `synchronous = NORMAL`). The store write follows behind, in batches;
//! at start, whatever the journal holds is applied to the store before anything else
//! reads it. Only `queued` commands whose record has not changed since the window was
//! taken move: an entry the store already holds changes nothing, even when its command
//! was put back in the queue since (a NACK) and is waiting for another window.
//!
//! One JSON line per window: `{"at":…,"downlink":"…","commands":["…"]}`. A torn last
//! line (a power cut mid-write) is ignored: that window had not been handed over.
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One window: when it was taken, its downlink id, its commands in frame order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When the window was taken, ms since the epoch (the `scheduled` time).
    pub at: i64,
    /// The downlink id (ChirpStack's queue item id).
    pub downlink: String,
    /// The commands' ids.
    pub commands: Vec<String>,
}

/// The open journal file.
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
}

/// Written entries are cleared once the store holds them and the file is this long.
pub const CLEAR_AT: u64 = 256 * 1024;

impl Journal {
    /// The entries in the file at `path` (none when it does not exist), in order.
    pub fn read(path: &Path) -> io::Result<Vec<Entry>> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.into_iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(e) => entries.push(e),
                // only the last line can be torn, and only by a crash mid-write
                Err(_) if i == last => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: line {}: {e}", path.display(), i + 1),
                    ));
                }
            }
        }
        Ok(entries)
    }

    /// Opens the journal at `path`, emptied: the caller has applied what it held.
    pub fn create(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        file.set_len(0)?;
        Ok(Journal {
            path: path.to_owned(),
            file,
            len: 0,
        })
    }

    /// Appends one entry with one `write(2)`.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Bytes written since the file was last emptied.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written since the file was last emptied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the file: call only when the store holds every entry.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> Entry {
        Entry {
            at: 1_700_000_000_000 + n as i64,
            downlink: format!("d{n}"),
            commands: vec![format!("d{n}"), format!("c{n}")],
        }
    }

    #[test]
    fn entries_read_back_in_order_and_clear_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        assert_eq!(Journal::read(&path).unwrap(), vec![], "no file, no entries");
        let mut j = Journal::create(&path).unwrap();
        j.append(&entry(1)).unwrap();
        j.append(&entry(2)).unwrap();
        assert_eq!(Journal::read(&path).unwrap(), vec![entry(1), entry(2)]);
        assert_eq!(j.len(), std::fs::metadata(&path).unwrap().len());
        j.clear().unwrap();
        assert!(j.is_empty());
        j.append(&entry(3)).unwrap();
        assert_eq!(Journal::read(&path).unwrap(), vec![entry(3)]);
        // opening again starts empty
        drop(j);
        Journal::create(&path).unwrap();
        assert_eq!(Journal::read(&path).unwrap(), vec![]);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_bad_line_before_it_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::create(&path).unwrap();
        j.append(&entry(1)).unwrap();
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, [&whole[..], &whole[..whole.len() / 2]].concat()).unwrap();
        assert_eq!(Journal::read(&path).unwrap(), vec![entry(1)]);
        std::fs::write(&path, [&b"{\"at\":\n"[..], &whole[..]].concat()).unwrap();
        let e = Journal::read(&path).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
