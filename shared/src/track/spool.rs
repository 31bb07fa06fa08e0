//! The spool: records that could not reach the tracking server, kept on the data volume.
//!
//! One file per logger: `<dir>/<ms>-<step>-<pid>-<id>.jsonl`, one [`Op`] per line, preceded by a
//! `meta` line naming the tracking server and `attach` lines for runs that already exist on it,
//! so a file is self-contained: replaying it needs nothing else. While the writing process lives,
//! the file is `*.jsonl.part` (not picked up by anyone else); it becomes `*.jsonl` when the step
//! ends. A replayer claims a file by renaming it to `*.jsonl.replaying-<pid>` (a rename is atomic,
//! so two pods sharing the volume never replay the same file). Artifacts named in a spooled
//! record are snapshotted into `<dir>/files/` (a hard link when possible: kubeyolo replaces
//! outputs by rename, so the link keeps the bytes as they were when logged).
//! Replay is at-least-once: a record may be sent twice, which MLflow absorbs (identical metric
//! points are de-duplicated, params may be re-logged with the same value, tags and artifacts
//! are overwritten).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::{new_local_id, Op};

/// First line of every spool file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub spool: u32,
    pub tracking_uri: String,
    pub step: String,
    pub created: i64,
}

/// A line of a spool file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Op(Op),
    Meta { meta: Meta },
}

/// An open spool file being appended to.
pub struct SpoolWriter {
    part: PathBuf,
    dir: PathBuf,
    out: BufWriter<File>,
    lines: usize,
}

impl SpoolWriter {
    /// Create `<dir>/<stem>.jsonl.part` and write its meta line.
    pub fn create(dir: &Path, stem: &str, meta: &Meta) -> io::Result<SpoolWriter> {
        fs::create_dir_all(dir)?;
        let part = dir.join(format!("{stem}.jsonl.part"));
        let file = OpenOptions::new().create(true).append(true).open(&part)?;
        let mut w = SpoolWriter { part, dir: dir.to_path_buf(), out: BufWriter::new(file), lines: 0 };
        w.write_line(&Line::Meta { meta: meta.clone() })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.part
    }

    /// Number of records written (the meta line excluded).
    pub fn records(&self) -> usize {
        self.lines.saturating_sub(1)
    }

    fn write_line(&mut self, line: &Line) -> io::Result<()> {
        let text = serde_json::to_string(line).map_err(io::Error::other)?;
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }

    /// Append one record. An artifact that is not yet a spool copy is snapshotted first, so the
    /// record stays valid even if the step later deletes or replaces the file.
    pub fn append(&mut self, op: Op) -> io::Result<()> {
        let op = match op {
            Op::Artifact { run, file, dest, owned: false } => {
                let copy = snapshot(&file, &self.dir.join("files"))?;
                Op::Artifact { run, file: copy, dest, owned: true }
            }
            other => other,
        };
        self.write_line(&Line::Op(op))
    }

    /// Push buffered lines to the OS (cheap; called after each burst of records).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Make the file durable and visible to replayers (`.part` → `.jsonl`).
    pub fn finish(mut self) -> io::Result<PathBuf> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        let done = self.part.with_extension("");
        fs::rename(&self.part, &done)?;
        Ok(done)
    }

    /// Read every record back and delete the file (the server is reachable again).
    pub fn take_back(mut self) -> io::Result<Vec<Op>> {
        self.out.flush()?;
        let (_, ops, _) = read(&self.part)?;
        fs::remove_file(&self.part)?;
        Ok(ops)
    }
}

/// Hard-link (or copy) `src` into `files_dir` under a fresh name.
fn snapshot(src: &Path, files_dir: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(files_dir)?;
    let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "artifact".into());
    let dst = files_dir.join(format!("{}-{name}", new_local_id()));
    if fs::hard_link(src, &dst).is_err() {
        fs::copy(src, &dst)?;
    }
    Ok(dst)
}

/// Read a spool file: meta line, records, and the number of unreadable lines (a torn last line
/// after a crash is skipped, not fatal).
pub fn read(path: &Path) -> io::Result<(Option<Meta>, Vec<Op>, usize)> {
    let mut meta = None;
    let mut ops = Vec::new();
    let mut bad = 0;
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Meta { meta: m }) => meta = Some(m),
            Ok(Line::Op(op)) => ops.push(op),
            Err(_) => bad += 1,
        }
    }
    Ok((meta, ops, bad))
}

/// Write a complete spool file in one go (what is left after a partial replay).
pub fn write_complete(dir: &Path, stem: &str, meta: &Meta, ops: Vec<Op>) -> io::Result<PathBuf> {
    let mut w = SpoolWriter::create(dir, stem, meta)?;
    for op in ops {
        w.append(op)?;
    }
    w.finish()
}

/// Finished spool files (`*.jsonl`), oldest first. With `stale`, also files a crashed process
/// left behind (`*.jsonl.part`, `*.jsonl.replaying-*`): only safe when no step is running.
pub fn list(dir: &Path, stale: bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.ends_with(".jsonl") || (stale && (name.ends_with(".jsonl.part") || name.contains(".jsonl.replaying")))
        })
        .collect();
    files.sort();
    files
}

/// Claim a spool file for replay by renaming it; `None` when another process got it first.
pub fn claim(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stem = name.split(".jsonl").next()?.to_string();
    let claimed = path.with_file_name(format!("{stem}.jsonl.replaying-{}", std::process::id()));
    fs::rename(path, &claimed).ok()?;
    Some(claimed)
}

/// The stem of a spool file name (`<stem>.jsonl…`).
pub fn stem_of(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.split(".jsonl").next().unwrap_or("spool").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::records::{KeyValue, Status};

    fn meta() -> Meta {
        Meta { spool: 1, tracking_uri: "http://x".into(), step: "t".into(), created: 1 }
    }

    #[test]
    fn write_finish_claim_read() {
        let dir = tempfile::tempdir().unwrap();
        let art = dir.path().join("a.txt");
        fs::write(&art, b"v1").unwrap();
        let mut w = SpoolWriter::create(dir.path(), "1-t-2-ab", &meta()).unwrap();
        w.append(Op::Log {
            run: "r".into(),
            metrics: vec![],
            params: vec![KeyValue { key: "k".into(), value: "v".into() }],
            tags: vec![],
        })
        .unwrap();
        w.append(Op::Artifact { run: "r".into(), file: art.clone(), dest: "a.txt".into(), owned: false }).unwrap();
        w.append(Op::End { run: "r".into(), status: Status::Finished, end_time: 5 }).unwrap();
        assert!(list(dir.path(), false).is_empty(), "a .part file is not ready");
        let done = w.finish().unwrap();
        // The step replaces its output afterwards: the spool keeps the logged bytes.
        fs::remove_file(&art).unwrap();
        fs::write(&art, b"v2").unwrap();
        assert_eq!(list(dir.path(), false), vec![done.clone()]);
        let claimed = claim(&done).unwrap();
        assert!(claim(&done).is_none(), "second claim must fail");
        let (m, ops, bad) = read(&claimed).unwrap();
        assert_eq!(m.unwrap(), meta());
        assert_eq!((ops.len(), bad), (3, 0));
        match &ops[1] {
            Op::Artifact { file, owned, .. } => {
                assert!(*owned);
                assert_eq!(fs::read(file).unwrap(), b"v1");
            }
            _ => panic!(),
        }
        assert_eq!(stem_of(&claimed), "1-t-2-ab");
    }

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        let w = SpoolWriter::create(dir.path(), "x", &meta()).unwrap();
        w.finish().unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"op\":\"end\",\"run\":\"r\",\"status\":\"FINISHED\",\"end_time\":1}\n{\"op\":\"lo").unwrap();
        let (_, ops, bad) = read(&p).unwrap();
        assert_eq!((ops.len(), bad), (1, 1));
    }
}
