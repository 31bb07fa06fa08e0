//! What `yolo-predict --source` accepts, as ultralytics' `LoadImagesAndVideos` does: an image
//! file, a folder (searched recursively), a glob (`images/*.jpg`, `data/**/*.png`), or a `.txt`
//! list of image paths (one per line, relative to the list's folder or absolute). Videos,
//! streams and URLs are reported as unsupported with what to do instead, never a panic.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Image extensions read (ultralytics' IMG_FORMATS that the decoders here handle).
pub const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"];
/// ultralytics' VID_FORMATS: recognised so the error can say what to do.
const VIDEO_EXTS: &[&str] = &["asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv", "webm"];

fn ext_of(p: &Path) -> String {
    p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

fn is_image(p: &Path) -> bool {
    IMAGE_EXTS.contains(&ext_of(p).as_str())
}

fn unsupported_video(what: &str) -> Error {
    Error::usage(format!("{what}: video and stream sources are not supported by yolo-predict")).with_hint(
        "extract frames first (e.g. `ffmpeg -i video.mp4 frames/%06d.png`) and pass the folder: --source frames",
    )
}

/// The image files `source` names, in a stable order (sorted within a folder or glob; a `.txt`
/// list keeps its order).
pub fn collect_images(source: &str) -> Result<Vec<PathBuf>> {
    if source.contains("://") {
        return Err(unsupported_video(source));
    }
    let path = Path::new(source);
    if source.contains(['*', '?', '[']) && !path.exists() {
        return glob_images(source);
    }
    if path.is_dir() {
        return folder_images(path);
    }
    if path.is_file() {
        return match ext_of(path).as_str() {
            "txt" => list_images(path),
            e if VIDEO_EXTS.contains(&e) => Err(unsupported_video(source)),
            _ if is_image(path) => Ok(vec![path.to_path_buf()]),
            e => Err(Error::data(format!("{source} is not an image (.{e})")).with_file(path).with_hint(format!(
                "pass an image ({}), a folder, a glob or a .txt list of images",
                IMAGE_EXTS.join(", ")
            ))),
        };
    }
    if VIDEO_EXTS.contains(&ext_of(path).as_str()) {
        return Err(unsupported_video(source));
    }
    Err(Error::data(format!("source {source} does not exist"))
        .with_hint("pass an image file, a folder, a glob (quoted: 'images/*.jpg') or a .txt list of images"))
}

fn folder_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && is_image(e.path()))
        .map(|e| e.into_path())
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(Error::data(format!("no images ({}) under {}", IMAGE_EXTS.join(", "), dir.display())));
    }
    Ok(v)
}

fn glob_images(pattern: &str) -> Result<Vec<PathBuf>> {
    let paths =
        glob::glob(pattern).map_err(|e| Error::usage(format!("--source {pattern}: not a valid glob pattern ({e})")))?;
    let mut v: Vec<PathBuf> = paths.filter_map(|p| p.ok()).filter(|p| p.is_file() && is_image(p)).collect();
    v.sort();
    if v.is_empty() {
        return Err(Error::data(format!("no images ({}) match {pattern}", IMAGE_EXTS.join(", "))));
    }
    Ok(v)
}

fn list_images(list: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(list)
        .map_err(|e| Error::io(format!("cannot read {}: {e}", list.display())).with_file(list))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let given = Path::new(entry);
        let p = if given.is_absolute() || given.is_file() { given.to_path_buf() } else { base.join(given) };
        let err = |what: &str| Error::data(format!("{entry}: {what}")).with_file(list).with_line(i + 1);
        if !p.is_file() {
            return Err(err("no such file (relative paths are taken from the list's folder)"));
        }
        if !is_image(&p) {
            return Err(err(&format!("not an image ({})", IMAGE_EXTS.join(", "))));
        }
        v.push(p);
    }
    if v.is_empty() {
        return Err(Error::data(format!("{} lists no images", list.display())).with_file(list));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_globs_lists_and_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = |s: &str| d.path().join(s);
        std::fs::create_dir_all(p("a/b")).unwrap();
        for f in ["a/1.jpg", "a/b/2.PNG", "a/notes.md", "3.png"] {
            std::fs::write(p(f), b"x").unwrap();
        }
        let s = |q: &Path| q.to_string_lossy().to_string();
        assert_eq!(collect_images(&s(&p("a"))).unwrap(), vec![p("a/1.jpg"), p("a/b/2.PNG")]);
        assert_eq!(collect_images(&s(&p("3.png"))).unwrap(), vec![p("3.png")]);
        assert_eq!(collect_images(&format!("{}/**/*.*", s(&p("a")))).unwrap(), vec![p("a/1.jpg"), p("a/b/2.PNG")]);
        std::fs::write(p("list.txt"), format!("# frames\n3.png\n\n{}\n", s(&p("a/1.jpg")))).unwrap();
        assert_eq!(collect_images(&s(&p("list.txt"))).unwrap(), vec![p("3.png"), p("a/1.jpg")]);
        std::fs::write(p("bad.txt"), "3.png\nmissing.jpg\n").unwrap();
        let e = collect_images(&s(&p("bad.txt"))).unwrap_err();
        assert_eq!((e.line, e.file.as_deref()), (Some(2), Some(p("bad.txt").as_path())), "{e}");
        assert!(e.to_string().contains("missing.jpg"), "{e}");
        std::fs::write(p("clip.mp4"), b"x").unwrap();
        for src in [s(&p("clip.mp4")), "rtsp://camera/stream".into(), s(&p("gone.avi"))] {
            let e = collect_images(&src).unwrap_err();
            assert!(
                e.to_string().contains("not supported") && e.hint.as_deref().unwrap_or("").contains("ffmpeg"),
                "{src}: {e}"
            );
        }
        assert!(collect_images(&s(&p("a/notes.md"))).unwrap_err().to_string().contains("not an image"));
        assert!(collect_images(&s(&p("nothing"))).unwrap_err().to_string().contains("does not exist"));
        assert!(collect_images(&format!("{}/*.gif", s(&p("a")))).unwrap_err().to_string().contains("no images"));
    }
}
