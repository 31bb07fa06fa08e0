//! Charts, drawn with plotters and an embedded font (pods have no system fonts).
