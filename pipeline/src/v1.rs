//! (being written)
use kubeyolo::Result;
pub fn emit(_p: &crate::graph::Pipeline, _s: &crate::settings::CompileSettings) -> Result<String> { Err(kubeyolo::Error::usage("v1 not yet")) }
