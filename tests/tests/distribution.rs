//! End-to-end tests of `yolo-distribution`: a synthetic dataset, bad labels, broken datasets.
//! Counts are checked against an independent count made here from the label files.

use std::fs;
use std::path::Path;

use kubeyolo::data::scan::{parse_cls_names, Distribution};
use kubeyolo::data::synth::{class_names, generate, SynthSpec};
use kubeyolo_e2e::{run, text};
use serde_json::Value;

/// (images, per-class images, per-class instances, empty label files) of one split, counted naively.
fn naive_counts(dir: &Path, split: &str, nc: usize) -> (usize, Vec<usize>, Vec<usize>, usize) {
    let (mut imgs, mut per_img, mut per_inst, mut empty) = (0, vec![0; nc], vec![0; nc], 0);
    for e in fs::read_dir(dir.join("images").join(split)).unwrap() {
        let p = e.unwrap().path();
        imgs += 1;
        let lbl = dir.join("labels").join(split).join(p.file_stem().unwrap()).with_extension("txt");
        let t = fs::read_to_string(lbl).unwrap();
        let mut seen = vec![false; nc];
        let mut any = false;
        for l in t.lines().filter(|l| !l.trim().is_empty()) {
            any = true;
            let c: usize = l.split_whitespace().next().unwrap().parse().unwrap();
            per_inst[c] += 1;
            seen[c] = true;
        }
        empty += (!any) as usize;
        for c in 0..nc {
            per_img[c] += seen[c] as usize;
        }
    }
    (imgs, per_img, per_inst, empty)
}

#[test]
fn synthetic_dataset_all_outputs() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let spec = SynthSpec { images_per_split: [40, 12, 8], nc: 5, seed: 3, ..SynthSpec::default() };
    let ds = root.join("datasets/synth");
    let yaml = generate(&ds, &spec).unwrap();
    // the yaml where users keep it, pointing at the dataset through the data root
    let data_yaml = root.join("data-yaml/data-synth.yaml");
    fs::create_dir_all(data_yaml.parent().unwrap()).unwrap();
    fs::write(&data_yaml, fs::read_to_string(&yaml).unwrap().replace("path: .", "path: datasets/synth")).unwrap();

    let out = root.join("out");
    let p = |n: &str| out.join(n).to_string_lossy().into_owned();
    let o = run(
        "yolo-distribution",
        root,
        &[
            "--data-yaml",
            "data-synth",
            "--out-result-json",
            &p("result_json"),
            "--out-cls-names-json",
            &p("cls_names_json"),
            "--out-ui-metadata",
            &p("ui/mlpipeline-ui-metadata.json"),
            "--out-md",
            &p("distribution.md"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| split |") && stdout.contains("| circle |"), "{}", text(&o));

    let result = fs::read_to_string(out.join("result_json")).unwrap();
    assert!(!result.ends_with('\n'), "KFP string outputs carry no trailing newline");
    let d = Distribution::from_arg(&result).unwrap();
    assert_eq!(d.names, class_names(5));
    assert_eq!(d.data_yaml, data_yaml);
    assert_eq!(d.dataset_root, ds);
    assert_eq!(d.splits.iter().map(|s| s.split.as_str()).collect::<Vec<_>>(), vec!["train", "val", "test"]);
    for s in &d.splits {
        let (imgs, per_img, per_inst, empty) = naive_counts(&ds, &s.split, 5);
        assert_eq!(s.images, imgs);
        assert_eq!(s.images_per_class, per_img, "{}", s.split);
        assert_eq!(s.instances_per_class, per_inst, "{}", s.split);
        assert_eq!(s.instances, per_inst.iter().sum::<usize>());
        assert_eq!(s.backgrounds, empty);
        assert_eq!(s.labelled_images + s.backgrounds, imgs);
        assert_eq!((s.missing_labels, s.invalid_lines, s.issues.len()), (0, 0, 0));
    }
    assert!(d.splits[0].instances > 40);

    let names = fs::read_to_string(out.join("cls_names_json")).unwrap();
    assert_eq!(names, r#"{"0":"circle","1":"square","2":"triangle","3":"cross","4":"ring"}"#);
    assert_eq!(parse_cls_names(&names).unwrap(), class_names(5));

    let ui: Value =
        serde_json::from_str(&fs::read_to_string(out.join("ui/mlpipeline-ui-metadata.json")).unwrap()).unwrap();
    let outputs = ui["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["type"], "table");
    assert_eq!(outputs[0]["header"][0], "id");
    assert!(outputs[0]["source"].as_str().unwrap().starts_with("0,circle,"));
    assert_eq!(outputs[1]["type"], "markdown");
    let md = fs::read_to_string(out.join("distribution.md")).unwrap();
    assert!(md.starts_with("# Dataset distribution") && md.contains("| train images |"), "{md}");
    // no temporary files left beside the outputs
    assert_eq!(fs::read_dir(&out).unwrap().count(), 4);
}

/// A small dataset with one bad label file and one missing label; exact expectations.
fn bad_dataset(root: &Path) -> std::path::PathBuf {
    let d = root.join("bad");
    let put = |rel: &str, body: &str| {
        let p = d.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    };
    put("images/train/a.jpg", "");
    put(
        "labels/train/a.txt",
        "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n7 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.4 0.4 0 0.1\n1 x 0.5 0.1 0.1\n",
    );
    put("images/train/b.jpg", "");
    put("images/val/c.png", "");
    put("labels/val/c.txt", "1 0.5 0.5 0.3 1.3\n1 0.5 0.5 0.3 0.3\n");
    put("data.yaml", "train: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n");
    d.join("data.yaml")
}

#[test]
fn bad_label_lines_are_reported_and_counted() {
    let t = tempfile::tempdir().unwrap();
    let yaml = bad_dataset(t.path());
    let out = t.path().join("result.json");
    let o = run(
        "yolo-distribution",
        t.path(),
        &["--data-yaml", yaml.to_str().unwrap(), "--out-result-json", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let a = t.path().join("bad/labels/train/a.txt");
    for (line, reason) in [
        (2, "4 columns"),
        (3, "class id 7 is not below the dataset's class count 2"),
        (4, "duplicate of line 1"),
        (5, "zero-size box"),
        (6, "column 2 'x' is not a number"),
    ] {
        let want = format!("{}:{line}: {reason}", a.display());
        assert!(err.contains(&want), "missing '{want}' in\n{}", text(&o));
    }
    assert!(
        err.contains(&format!("{}:1: h = 1.3 is outside [0, 1]", t.path().join("bad/labels/val/c.txt").display())),
        "{err}"
    );
    let d = Distribution::from_arg(out.to_str().unwrap()).unwrap();
    let tr = &d.splits[0];
    assert_eq!((tr.images, tr.labelled_images, tr.missing_labels, tr.backgrounds), (2, 1, 1, 0));
    assert_eq!((tr.instances_per_class.clone(), tr.invalid_lines, tr.files_with_issues), (vec![1, 0], 5, 1));
    let v = &d.splits[1];
    assert_eq!((v.instances_per_class.clone(), v.invalid_lines), (vec![0, 1], 1));
    assert_eq!(v.invalid_by_kind.get("out_of_range"), Some(&1));
}

#[test]
fn strict_mode_fails_without_outputs() {
    let t = tempfile::tempdir().unwrap();
    let yaml = bad_dataset(t.path());
    let out = t.path().join("o/result_json");
    let o = run(
        "yolo-distribution",
        t.path(),
        &["--data-yaml", yaml.to_str().unwrap(), "--strict", "--out-result-json", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("6 invalid or unreadable"), "{}", text(&o));
    assert!(!out.exists() && !out.parent().unwrap().exists());
}

#[test]
fn broken_datasets_fail_clearly_and_leave_outputs_alone() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let out = root.join("result_json");
    fs::write(&out, "previous").unwrap();
    let cases: [(&str, &str, i32, &str); 4] = [
        ("malformed.yaml", "train: a\nval: b\nnames: [x, y\n", 3, "malformed.yaml:"),
        ("missing.yaml", "names: [x]\ntrain: images/train\nval: nowhere\n", 4, "missing.yaml:3: key 'val':"),
        ("nc.yaml", "train: a\nval: b\nnames: [x]\nnc: 2\n", 3, "nc.yaml:4: key 'nc': 'nc: 2' does not match"),
        ("emptysplit.yaml", "names: [x]\ntrain: images/train\nval: empty\n", 4, "split 'val' holds no images"),
    ];
    fs::create_dir_all(root.join("images/train")).unwrap();
    fs::write(root.join("images/train/a.jpg"), "").unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    for (name, body, code, want) in cases {
        fs::write(root.join(name), body).unwrap();
        let o = run("yolo-distribution", root, &["--data-yaml", name, "--out-result-json", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(code), "{name}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want) && err.contains("hint:"), "{name}: {}", text(&o));
        assert_eq!(fs::read_to_string(&out).unwrap(), "previous", "{name}");
    }
    let o = run("yolo-distribution", root, &["--data-yaml", "no-such-data"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

#[test]
fn help_explains_every_flag_with_an_example() {
    let o = run("yolo-distribution", Path::new("/nonexistent"), &["--help"]);
    assert!(o.status.success());
    // clap wraps long lines: compare with whitespace collapsed
    let h = String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    for flag in [
        "--data-yaml",
        "--out-result-json",
        "--out-cls-names-json",
        "--out-ui-metadata",
        "--out-md",
        "--data-root",
        "--print-issues",
        "--strict",
    ] {
        assert!(h.contains(&format!("Example: {flag}")), "{flag} has no example in --help:\n{h}");
    }
}
