//! `yolo-predict`: run a YOLOv8 model on images, as `yolo predict` does, and write what it
//! found: YOLO txt labels, one JSON file, and optionally annotated images. `--summary` prints the
//! model summary (layers, parameters, GFLOPs) instead.
//!
//! Thin glue: name resolution (`kubeyolo::root`), model loading (`kubeyolo::nn::weights`),
//! prediction and output formats (`kubeyolo::nn::predict`).

use std::path::{Path, PathBuf};

use clap::Parser;
use kubeyolo::data::source::collect_images;
use kubeyolo::error::{Error, Result};
use kubeyolo::nn::predict::{annotate, predict_images, PredictConfig};
use kubeyolo::root::DataRoot;

const AFTER_HELP: &str = "\
Examples:
  # detections for a folder of images with the official weights (downloaded into <root>/weights/):
  yolo-predict --data-root ./demo --model yolov8n.pt --source ./demo/images --out ./runs/predict

  # a kubeyolo checkpoint, only classes 0 and 2, annotated images too:
  yolo-predict --model /data/runs/train/weights/best.safetensors --source img.jpg --classes 0,2 --save-img

  # the model summary (as ultralytics prints it), no images needed:
  yolo-predict --model yolov8s.yaml --summary

Outputs under --out:
  labels/<image stem>.txt  one line per detection: class x_center y_center width height [conf]
                           (normalised to 0-1, ultralytics' save_txt format; no file when nothing found)
  predictions.json         [{image, orig_shape [h, w], input_shape [h, w], speed_ms, detections:
                           [{name, class, confidence, box {x1, y1, x2, y2}} ...]} ...] (pixels)
  <image name>             annotated copy (with --save-img)

Exit codes: 0 ok; 2 bad flags; 3 model or weights not found; 4 unreadable image or empty source;
5 model/weights problem; 6 I/O error; 7 official weights could not be downloaded.";

/// Run a YOLOv8 model on images and write YOLO txt / JSON / annotated images.
#[derive(Parser, Debug)]
#[command(name = "yolo-predict", version = kubeyolo::VERSION, after_help = AFTER_HELP, long_about = "\
Run a YOLOv8 detector on an image or a folder of images, with ultralytics' exact preprocessing \
(letterbox to a stride-multiple rectangle, grey padding, RGB, /255), head decoding and NMS, and map \
the boxes back to the original images. The model is an ultralytics .pt (yolov8n.pt, best.pt), a \
kubeyolo .safetensors checkpoint, or a model yaml (random weights: useful with --summary).")]
struct Args {
    /// Model: `yolov8n.pt` (official weights are downloaded when not on the volume), a `.pt` /
    /// `.safetensors` checkpoint, or a model yaml. Example: --model weights/best.pt
    #[arg(long, default_value = "yolov8n.pt")]
    model: String,

    /// Images: a file, a folder (searched recursively for jpg, png, bmp, webp, tiff), a quoted
    /// glob, or a .txt list of image paths (one per line, relative to the list). Videos and
    /// streams are not supported (extract frames first). Example: --source '/data/images/*.jpg'
    #[arg(long)]
    source: Option<String>,

    /// Images per forward pass. With more than one, images of different sizes are padded to
    /// --imgsz squares (as ultralytics does), so results can differ slightly from --batch 1.
    /// Example: --batch 8
    #[arg(long, default_value_t = 1)]
    batch: usize,

    /// Output folder (created). Example: --out /data/runs/predict
    #[arg(long, default_value = "runs/predict")]
    out: PathBuf,

    /// Inference size in pixels (multiple of 32). Example: --imgsz 640
    #[arg(long, default_value_t = 640)]
    imgsz: usize,

    /// Confidence threshold. Example: --conf 0.25
    #[arg(long, default_value_t = 0.25)]
    conf: f32,

    /// NMS IoU threshold. Example: --iou 0.7
    #[arg(long, default_value_t = 0.7)]
    iou: f32,

    /// Maximum detections per image. Example: --max-det 300
    #[arg(long, default_value_t = 300)]
    max_det: usize,

    /// Keep only these class indices (comma separated). Example: --classes 0,2
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<usize>>,

    /// Class-agnostic NMS (overlapping boxes of different classes suppress each other). Example: --agnostic-nms
    #[arg(long)]
    agnostic_nms: bool,

    /// Pad every image to a full imgsz square instead of the smallest stride-multiple rectangle
    /// (ultralytics predict uses the rectangle). Example: --square
    #[arg(long)]
    square: bool,

    /// Append the confidence to each YOLO txt line. Example: --save-conf
    #[arg(long)]
    save_conf: bool,

    /// Also write annotated copies of the images (boxes in class colours). Example: --save-img
    #[arg(long)]
    save_img: bool,

    /// Print the model summary (layer table, parameters, GFLOPs at --imgsz) and exit. Example: --summary
    #[arg(long)]
    summary: bool,

    /// Compute device: cpu, 0 / cuda:0 (CUDA builds), or empty for automatic. Example: --device cpu
    #[arg(long, default_value = "")]
    device: String,

    /// Folder model names resolve against (the mounted volume). Overrides KUBEYOLO_DATA_ROOT;
    /// default /data. Example: --data-root ./demo
    #[arg(long)]
    data_root: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    kubeyolo::error::run_main(|| run(args))
}

fn run(args: Args) -> Result<()> {
    // CPU inference: no mmap churn for big buffers, one thread pool (see nn::cpu).
    kubeyolo::nn::cpu::tune_cpu_runtime(None);
    let root = DataRoot::from_flag(args.data_root.as_deref());
    let selected = kubeyolo::device::select(&args.device)?;
    for w in &selected.warnings {
        eprintln!("warning: {w}");
    }
    // A path that exists as given (relative to the working directory) wins; otherwise the name
    // resolves under the data root like every step's --model-name.
    let given = Path::new(&args.model);
    let src = if given.is_file() {
        let requested = given.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        kubeyolo::root::ModelSource::File { path: given.to_path_buf(), requested }
    } else {
        root.resolve_model(&args.model)?
    };
    let lm = kubeyolo::nn::weights::load_source(&src, &selected.device)?;
    if args.summary {
        println!("{}", lm.model.summary_table(args.imgsz));
        return Ok(());
    }
    let Some(source) = &args.source else {
        return Err(Error::usage("--source is required (an image or a folder), unless --summary is given"));
    };
    if args.imgsz == 0 || args.imgsz % lm.model.max_stride() != 0 {
        return Err(Error::usage(format!(
            "--imgsz {} must be a positive multiple of {}",
            args.imgsz,
            lm.model.max_stride()
        )));
    }
    if !(0.0..=1.0).contains(&args.conf) || !(0.0..=1.0).contains(&args.iou) {
        return Err(Error::usage("--conf and --iou must be between 0 and 1"));
    }
    let cfg = PredictConfig {
        imgsz: args.imgsz,
        conf: args.conf,
        iou: args.iou,
        max_det: args.max_det,
        classes: args.classes.clone(),
        agnostic_nms: args.agnostic_nms,
        rect: !args.square,
    };
    let images = collect_images(source)?;
    // BatchNorm folded into the convs once, not per image.
    let net = kubeyolo::nn::fused::EvalNet::new(&lm.model, &selected.device)?;
    if args.batch == 0 {
        return Err(Error::usage("--batch must be at least 1"));
    }
    let mut all = Vec::with_capacity(images.len());
    let mut total = 0;
    for chunk in images.chunks(args.batch) {
        let decoded = chunk.iter().map(|p| kubeyolo::data::image::load_rgb(p)).collect::<Result<Vec<_>>>()?;
        let results = predict_images(&net, &lm.names, &decoded.iter().collect::<Vec<_>>(), &cfg, &selected.device)?;
        for ((path, img), r) in chunk.iter().zip(&decoded).zip(results) {
            let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            let txt = r.yolo_txt(args.save_conf);
            if !txt.is_empty() {
                kubeyolo::files::write_atomic(&args.out.join("labels").join(format!("{stem}.txt")), txt.as_bytes())?;
            }
            if args.save_img {
                save_image(&annotate(img, &r), &args.out.join(path.file_name().unwrap_or_default()))?;
            }
            eprintln!(
                "{}: {}x{} {} detections, {:.1}ms",
                path.display(),
                r.input_shape.0,
                r.input_shape.1,
                r.detections.len(),
                r.speed_ms.iter().sum::<f64>()
            );
            total += r.detections.len();
            all.push(serde_json::json!({
                "image": path.display().to_string(),
                "orig_shape": [r.orig_shape.0, r.orig_shape.1],
                "input_shape": [r.input_shape.0, r.input_shape.1],
                "speed_ms": {"preprocess": r.speed_ms[0], "inference": r.speed_ms[1], "postprocess": r.speed_ms[2]},
                "detections": r.summary_json(),
            }));
        }
    }
    kubeyolo::files::write_json_atomic(&args.out.join("predictions.json"), &all)?;
    println!("{} images, {} detections; results in {}", images.len(), total, args.out.display());
    Ok(())
}

/// Encode by the file's extension (png, jpg, …) and write atomically.
fn save_image(img: &image::RgbImage, path: &Path) -> Result<()> {
    let fmt = image::ImageFormat::from_path(path).unwrap_or(image::ImageFormat::Png);
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, fmt).map_err(|e| Error::io(format!("cannot encode {}: {e}", path.display())))?;
    kubeyolo::files::write_atomic(path, buf.get_ref())
}
