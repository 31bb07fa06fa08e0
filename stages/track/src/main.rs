//! `yolo-track`: the MLflow tracking companion of the kubeyolo steps.
//!
//! - `replay`: send records that steps spooled while the tracking server was unreachable
//!   (`<root>/.kubeyolo/mlflow-spool/*.jsonl`). Steps replay them by themselves when they start;
//!   this command is for the end of a pipeline, or after an outage, or for files a crashed
//!   process left (`--stale`).
//! - `check`: is the tracking server reachable, does the API accept us (host check,
//!   credentials), and where would artifacts go?

use clap::{Parser, Subcommand};
use kubeyolo::track::client::{ApiError, Client};
use kubeyolo::track::engine::replay_dir;
use kubeyolo::track::{default_spool_dir, TrackingArgs, TrackingConfig};
use kubeyolo::{Error, Result};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "yolo-track",
    version,
    about = "Replay spooled MLflow records and check tracking-server connectivity",
    long_about = "Companion of the kubeyolo steps for MLflow tracking.\n\n\
        The tracking server is taken from MLFLOW_TRACKING_URI (or --mlflow-uri); credentials from \
        MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN; S3 artifact \
        stores from MLFLOW_S3_ENDPOINT_URL and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.",
    after_help = "Examples:\n  \
        MLFLOW_TRACKING_URI=http://mlflow:5000 yolo-track check\n  \
        MLFLOW_TRACKING_URI=http://mlflow:5000 yolo-track replay --root /data\n  \
        yolo-track replay --mlflow-uri http://127.0.0.1:5000 --spool /tmp/spool --stale --any-server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send spooled records to the tracking server and delete the delivered spool files.
    #[command(after_help = "Example:\n  MLFLOW_TRACKING_URI=http://mlflow:5000 yolo-track replay --root /data\n\n\
        Exit status: 0 when every file was delivered (or there was none), 7 when files are left\n(server unreachable, or written for another server without --any-server).")]
    Replay {
        /// Data root whose spool folder (<root>/.kubeyolo/mlflow-spool) is replayed.
        #[arg(long, default_value = "/data", value_name = "DIR")]
        root: PathBuf,
        /// Spool folder to replay instead of the one under --root.
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
        /// Also replay files a crashed process left behind (*.jsonl.part, *.jsonl.replaying-*).
        /// Only safe when no step is running on this data volume.
        #[arg(long)]
        stale: bool,
        /// Replay files written for another tracking URI into this one (e.g. the server moved).
        #[arg(long)]
        any_server: bool,
        #[command(flatten)]
        tracking: TrackingArgs,
    },
    /// Check that the tracking server answers and accepts our requests.
    #[command(
        after_help = "Example:\n  MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_EXPERIMENT_NAME=yolo yolo-track check\n\n\
        Exit status: 0 when reachable and accepted, 7 otherwise."
    )]
    Check {
        #[command(flatten)]
        tracking: TrackingArgs,
    },
}

fn config(tracking: &TrackingArgs) -> Result<TrackingConfig> {
    match TrackingConfig::resolve(tracking) {
        Ok(Some(cfg)) => Ok(cfg),
        Ok(None) => Err(Error::usage("no tracking server: set MLFLOW_TRACKING_URI or --mlflow-uri")),
        Err(msg) => Err(Error::usage(msg)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))
}

fn network(what: &str, e: ApiError) -> Error {
    Error::network(format!("{what}: {e}"))
}

fn main() {
    let cli = Cli::parse();
    kubeyolo::error::run_main(|| match cli.command {
        Command::Replay { root, spool, stale, any_server, tracking } => {
            let cfg = config(&tracking)?;
            let client = Client::new(&cfg).map_err(Error::usage)?;
            let dir = spool.or(cfg.spool_dir.clone()).unwrap_or_else(|| default_spool_dir(&root));
            let never = || false;
            let s = runtime()?.block_on(replay_dir(&client, &dir, stale, any_server, cfg.retry_budget, &never, false));
            println!(
                "replayed {} file(s) from {}: {} record(s) delivered, {} refused by the server",
                s.files_done,
                dir.display(),
                s.delivered,
                s.dropped
            );
            for f in &s.files_skipped {
                println!("skipped (written for another server; use --any-server): {}", f.display());
            }
            if s.files_left.is_empty() && s.files_skipped.is_empty() {
                Ok(())
            } else {
                for f in &s.files_left {
                    println!("left for a later replay: {}", f.display());
                }
                Err(Error::network(format!(
                    "{} spool file(s) not delivered",
                    s.files_left.len() + s.files_skipped.len()
                ))
                .with_hint("is the tracking server reachable? `yolo-track check` tells"))
            }
        }
        Command::Check { tracking } => {
            let cfg = config(&tracking)?;
            let client = Client::new(&cfg).map_err(Error::usage)?;
            runtime()?.block_on(async {
                client.health().await.map_err(|e| network("health check", e))?;
                println!("reachable: {}", client.base());
                let name = cfg.experiment_name.as_str();
                let j = client.get_json("api/2.0/mlflow/experiments/get-by-name", &[("experiment_name", name)]).await;
                match j {
                    Ok(j) => println!(
                        "experiment '{name}': id {}, artifacts at {}",
                        j["experiment"]["experiment_id"].as_str().unwrap_or("?"),
                        j["experiment"]["artifact_location"].as_str().unwrap_or("?")
                    ),
                    Err(ApiError::Rejected { code, .. }) if code == "RESOURCE_DOES_NOT_EXIST" => {
                        println!("experiment '{name}': does not exist yet (the first step creates it)")
                    }
                    Err(e) => return Err(network("API call refused", e)),
                }
                println!("ok");
                Ok(())
            })
        }
    })
}
