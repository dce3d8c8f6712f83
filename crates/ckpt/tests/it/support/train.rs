//! The training example (`examples/train`), for the tests that train with it.

#[path = "../../../examples/train/driver.rs"]
pub mod driver;
#[path = "../../../examples/train/mlp.rs"]
pub mod mlp;
#[path = "../../../examples/train/run.rs"]
pub mod run;
#[path = "../../../examples/train/sgd.rs"]
pub mod sgd;
