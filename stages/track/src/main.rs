//! yolo-track (being written)
fn main() {}
