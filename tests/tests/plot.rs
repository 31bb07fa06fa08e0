//! End-to-end tests of `yolo-plot`: charts from distribution results (files and inline JSON, as
//! KFP passes them), every output format, the chain distribution → plot on a synthetic dataset,
//! and bad inputs failing clearly without partial outputs.

use std::fs;
use std::path::Path;

use kubeyolo::data::scan::{Distribution, SplitStats, SCHEMA};
use kubeyolo::data::synth::{generate, SynthSpec};
use kubeyolo_e2e::{run, text};

/// A distribution with `nc` classes and the given splits; val misses class 1.
fn dist(nc: usize, splits: &[&str]) -> Distribution {
    Distribution {
        schema: SCHEMA.into(),
        data_yaml: "/data/data-custom.yaml".into(),
        dataset_root: "/data/datasets/custom".into(),
        names: (0..nc).map(|i| format!("name-{i}")).collect(),
        splits: splits
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let images_per_class: Vec<usize> =
                    (0..nc).map(|c| if *s == "val" && c == 1 { 0 } else { (c * 37 + 11) % 900 + 1 }).collect();
                SplitStats {
                    split: s.to_string(),
                    images: 1000 / (k + 1),
                    instances: 3000 / (k + 1),
                    instances_per_class: images_per_class.iter().map(|n| n * 3).collect(),
                    images_per_class,
                    backgrounds: 2,
                    ..Default::default()
                }
            })
            .collect(),
    }
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn assert_no_outputs(dir: &Path) {
    let left: Vec<_> = walk(dir);
    assert!(left.is_empty(), "outputs left behind: {left:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn result_file_gives_png_svg_html_md_and_ui_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let result = root.join("distribution/result.json");
    fs::create_dir_all(result.parent().unwrap()).unwrap();
    fs::write(&result, serde_json::to_string(&dist(4, &["train", "val", "test"])).unwrap()).unwrap();
    let (html, md, ui) =
        (root.join("out/a/plot.html"), root.join("out/b/plot.md"), root.join("ui/mlpipeline-ui-metadata.json"));
    let out = run(
        "yolo-plot",
        root,
        &[
            "--result-json",
            result.to_str().unwrap(),
            "--out-html",
            html.to_str().unwrap(),
            "--out-md",
            md.to_str().unwrap(),
            "--out-ui-metadata",
            ui.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // PNG/SVG default to the result file's folder.
    let png = fs::read(root.join("distribution/distribution.png")).unwrap();
    let (w, h) = png_size(&png);
    assert!(w >= 800 && h >= 3 * 150, "{w}x{h}");
    let svg = fs::read_to_string(root.join("distribution/distribution.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for needle in ["0 name-0", "3 name-3", "train: images per class", "test: instances per class"] {
        assert!(svg.contains(needle), "SVG lacks {needle}");
    }

    // HTML: self-contained, with the PNG itself embedded.
    let page = fs::read_to_string(&html).unwrap();
    let start = page.find("data:image/png;base64,").expect("embedded PNG") + "data:image/png;base64,".len();
    let b64: String = page[start..].chars().take_while(|c| *c != '"').collect();
    assert!(b64.starts_with("iVBORw0KGgo"), "base64 PNG signature");
    assert_eq!(b64.len(), png.len().div_ceil(3) * 4, "the embedded image is the written PNG");
    assert!(page.contains("<td>name-2</td>") && !page.contains("src=\"http"), "tables, no external resources");

    let mdtext = fs::read_to_string(&md).unwrap();
    assert!(
        mdtext.starts_with("# Class distribution")
            && mdtext.contains("![class distribution](data:image/png;base64,iVBOR")
    );
    assert!(mdtext.contains("| 1 | name-1 |"), "per-class table in markdown");

    let meta: serde_json::Value = serde_json::from_str(&fs::read_to_string(&ui).unwrap()).unwrap();
    let outputs = meta["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["type"], "web-app");
    assert_eq!(outputs[0]["storage"], "inline");
    assert!(outputs[0]["source"].as_str().unwrap().contains("data:image/png;base64,iVBOR"));
    assert_eq!(outputs[1]["type"], "markdown");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("distribution.png") && stdout.contains("distribution.svg"), "{stdout}");
}

#[test]
fn inline_json_as_kfp_passes_it_and_80_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let d = dist(80, &["train", "val"]);
    let json = serde_json::to_string(&d).unwrap();
    let names = kubeyolo::data::scan::cls_names_json(&d.names.iter().map(|n| n.to_uppercase()).collect::<Vec<_>>());
    let out = run("yolo-plot", root, &["--result-json", &json, "--cls-names-json", &names]);
    assert!(out.status.success(), "{}", text(&out));
    // No file to sit beside: <data root>/distribution.
    let png = fs::read(root.join("distribution/distribution.png")).unwrap();
    let (_, h) = png_size(&png);
    assert!(h > 2 * 80 * 12, "80 classes need tall panels, got height {h}");
    let svg = fs::read_to_string(root.join("distribution/distribution.svg")).unwrap();
    assert!(svg.contains("79 NAME-79"), "names from --cls-names-json label the bars");
    // --out-dir wins.
    let out = run("yolo-plot", root, &["--result-json", &json, "--out-dir", root.join("elsewhere").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(root.join("elsewhere/distribution.png").exists());
}

#[test]
fn distribution_then_plot_on_a_synthetic_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = SynthSpec { images_per_split: [12, 4, 4], imgsz: 64, ..Default::default() };
    let yaml = generate(&root.join("ds"), &spec).unwrap();
    let (result, names) = (root.join("kfp/result_json"), root.join("kfp/cls_names_json"));
    let out = run(
        "yolo-distribution",
        root,
        &[
            "--data-yaml",
            yaml.to_str().unwrap(),
            "--out-result-json",
            result.to_str().unwrap(),
            "--out-cls-names-json",
            names.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Pass the values as KFP does (file contents, by value).
    let (r, n) = (fs::read_to_string(&result).unwrap(), fs::read_to_string(&names).unwrap());
    let html = root.join("html/distribution_html");
    let out =
        run("yolo-plot", root, &["--result-json", &r, "--cls-names-json", &n, "--out-html", html.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    png_size(&fs::read(root.join("distribution/distribution.png")).unwrap());
    assert!(fs::read_to_string(&html).unwrap().contains("circle"));
}

#[test]
fn bad_inputs_fail_clearly_without_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let outdir = root.join("out");
    let html = outdir.join("x.html");
    let ui = outdir.join("ui.json");
    let run_plot = |result: &str, extra: &[&str]| {
        let mut args = vec![
            "--result-json",
            result,
            "--out-dir",
            outdir.to_str().unwrap(),
            "--out-html",
            html.to_str().unwrap(),
            "--out-ui-metadata",
            ui.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run("yolo-plot", root, &args)
    };

    // Missing file: named, exit 3 (a missing input file is a config problem).
    let missing = root.join("nope/result.json");
    let out = run_plot(missing.to_str().unwrap(), &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(err.contains("nope/result.json"), "{err}");
    assert_no_outputs(&outdir);

    // Not JSON / wrong shape: named file, exit 4.
    let bad = root.join("bad.json");
    fs::write(&bad, "{\"schema\": \"kubeyolo.distribution/1\", \"names\": [").unwrap();
    let out = run_plot(bad.to_str().unwrap(), &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(err.contains("bad.json") && err.contains("not a distribution result"), "{err}");
    assert_no_outputs(&outdir);

    // Per-class vectors shorter than the class list.
    let mut d = dist(3, &["train"]);
    d.splits[0].instances_per_class.pop();
    let out = run_plot(&serde_json::to_string(&d).unwrap(), &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("split 'train'"), "{}", text(&out));
    assert_no_outputs(&outdir);

    // Class names that disagree with the result.
    let good = serde_json::to_string(&dist(3, &["train"])).unwrap();
    let out = run_plot(&good, &["--cls-names-json", "{\"0\": \"a\"}"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cls-names-json has 1 classes"), "{}", text(&out));
    assert_no_outputs(&outdir);

    // A missing class-names file is named too.
    let out = run_plot(&good, &["--cls-names-json", root.join("names.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("names.json"), "{}", text(&out));
    assert_no_outputs(&outdir);
}

#[test]
fn help_explains_every_flag_with_an_example() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run("yolo-plot", tmp.path(), &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in
        ["--result-json", "--cls-names-json", "--out-dir", "--out-html", "--out-md", "--out-ui-metadata", "--data-root"]
    {
        let n = help.matches(flag).count();
        assert!(n >= 2, "{flag} should be described and used in an example ({n} mentions)\n{help}");
    }
    assert!(help.contains("Example"), "{help}");
}
