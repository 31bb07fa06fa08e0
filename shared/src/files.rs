//! Atomic output files.
//!
//! Every output kubeyolo writes (weights, json, csv, plots, KFP output parameters) goes through
//! here: the bytes land in a temporary file in the destination folder, are flushed, and the file
//! is renamed over the destination. A crash or an error mid-write therefore never leaves a
//! half-written output for the next pipeline step to read. Parent folders are created, because
//! KFP hands steps output paths whose folders may not exist yet.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The folder a temporary file for `path` goes in: `path`'s own, so the rename stays on one
/// file system.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Write `bytes` to `path` atomically (temp file in the same folder + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Copy `from` to `to` atomically (weights: best from last, the tuner's best iteration).
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| Error::io_at(from, "read", e))?;
    write_atomic(to, &bytes)
}

/// `to` becomes a snapshot of `from` atomically: a second name for `from`'s file (a hard link
/// made under a temporary name, then renamed over `to`), or an atomic copy where the volume has
/// no hard links. Only for files that are only ever replaced through this module (a new file
/// renamed over the old name, never rewritten in place), so that a later write of `from` leaves
/// `to` as it was. The trainer's `best` and `epochN` snapshots of `last`: a checkpoint with its
/// optimizer state is ~50 MB for yolov8n and ~1 GB for yolov8x, and this neither reads nor
/// writes it again.
pub fn snapshot_atomic(from: &Path, to: &Path) -> Result<()> {
    let dir = folder_of(to);
    let linked =
        tempfile::Builder::new().prefix(".kubeyolo-").suffix(".tmp").make_in(dir, |p| std::fs::hard_link(from, p));
    match linked {
        Ok(tmp) => tmp.persist(to).map(|_| ()).map_err(|e| Error::io_at(to, "rename into place", e.error)),
        Err(_) => copy_atomic(from, to),
    }
}

/// Write to `path` atomically through a writer callback (for streaming large outputs).
/// If `fill` fails, the temporary file is removed and `path` is left untouched.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, "create output folder", e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".kubeyolo-").suffix(".tmp");
    // tempfile creates 0600 files; outputs on a shared /data volume must stay readable by the
    // notebook or the next pod that mounts it under another user (0644, as `open` would).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(|e| Error::io_at(dir, "create a temporary file", e))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut w).and_then(|_| w.flush()).map_err(|e| Error::io_at(path, "write", e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io_at(path, "flush", e))?;
    tmp.persist(path).map_err(|e| Error::io_at(path, "rename into place", e.error))?;
    Ok(())
}

/// Serialize `value` as pretty JSON and write it atomically.
pub fn write_json_atomic<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::internal(format!("cannot serialize JSON: {e}")).with_file(path))?;
    write_atomic(path, &bytes)
}

/// Read a whole text file, with an error that names the file.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io_at(path, "read", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_destination_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b/out.json");
        write_atomic(&out, b"first").unwrap();
        let err = write_atomic_with(&out, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"first");
        let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file must be cleaned up");
    }

    #[test]
    fn snapshot_keeps_its_content_when_the_source_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let (last, best) = (dir.path().join("last"), dir.path().join("w/best"));
        write_atomic(&last, b"epoch 1").unwrap();
        snapshot_atomic(&last, &best).unwrap();
        write_atomic(&last, b"epoch 2").unwrap();
        assert_eq!(std::fs::read(&best).unwrap(), b"epoch 1");
        snapshot_atomic(&last, &best).unwrap(); // over an existing snapshot
        write_atomic(&last, b"epoch 3").unwrap();
        assert_eq!(std::fs::read(&best).unwrap(), b"epoch 2");
        let names = |d: &Path| std::fs::read_dir(d).unwrap().count();
        assert_eq!((names(dir.path()), names(&dir.path().join("w"))), (2, 1), "no temporary file left");
        assert!(snapshot_atomic(&dir.path().join("missing"), &best).is_err());
        assert_eq!(std::fs::read(&best).unwrap(), b"epoch 2", "a failed snapshot leaves the old one");
    }

    #[cfg(unix)]
    #[test]
    fn outputs_are_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        write_atomic(&out, b"x").unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
    }
}
