//! The labels of one training batch, collated as ultralytics' `YOLODataset.collate_fn` lays them
//! out: one row per box, with the index of its image in the batch. The data loader produces
//! them ([`crate::data`]); the loss ([`crate::train::loss`]) consumes them.

/// Collated batch labels (ultralytics' `batch["batch_idx"]`, `batch["cls"]`, `batch["bboxes"]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// Index of each box's image within the batch.
    pub batch_idx: Vec<usize>,
    /// Class of each box.
    pub cls: Vec<usize>,
    /// Each box as centre x, centre y, width, height, normalised to the network input (0..1).
    pub bboxes: Vec<[f32; 4]>,
}

impl Targets {
    /// Number of boxes.
    pub fn len(&self) -> usize {
        self.cls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cls.is_empty()
    }

    /// Append one box of image `img`.
    pub fn push(&mut self, img: usize, cls: usize, xywh: [f32; 4]) {
        self.batch_idx.push(img);
        self.cls.push(cls);
        self.bboxes.push(xywh);
    }
}
