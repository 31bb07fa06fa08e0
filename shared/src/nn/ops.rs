//! (being written by the speed engineer; see team brief)
