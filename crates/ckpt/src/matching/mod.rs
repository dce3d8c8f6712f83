//! Matching checkpoint names to model names: Caffe2/Detectron1 renaming and the suffix
//! heuristics of detectron2's `align_and_update_state_dicts`.
