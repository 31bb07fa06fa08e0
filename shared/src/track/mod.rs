//! MLflow tracking.
