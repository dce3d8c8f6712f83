//! What the fuzz targets of ckpt share: an allocation budget that turns an amplification
//! into a crash ([`budget`]), what is done with a value once read ([`exercise`]), and the
//! builder of torch zip archives from parts for the structure-aware target ([`zip_parts`]).

pub mod budget;
pub mod exercise;
pub mod zip_parts;
