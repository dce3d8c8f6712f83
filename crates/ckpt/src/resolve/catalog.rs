//! The `catalog://` names of Detectron1 (Caffe2) models and the URLs they stand for, as
//! detectron2's `ModelCatalog` defines them:
//!
//! - `catalog://ImageNetPretrained/<name>`: an ImageNet-pretrained backbone, e.g.
//!   `catalog://ImageNetPretrained/MSRA/R-50`;
//! - `catalog://Caffe2Detectron/COCO/<id>/<name>`: a Detectron1 COCO baseline, e.g.
//!   `catalog://Caffe2Detectron/COCO/35857197/e2e_faster_rcnn_R-50-C4_1x`.
//!
//! Every model fused its batch norms into affine layers and expects `PIXEL_STD = [1, 1, 1]`.

use std::path::PathBuf;

use super::{Lookup, PathHandler};
use crate::error::{Error, Result};

/// Where the detectron2 model zoo lives (`detectron2://X` is this followed by `X`).
pub(crate) const DETECTRON2_URL_PREFIX: &str = "https://dl.fbaipublicfiles.com/detectron2/";

/// Where the Detectron1 models live.
pub(crate) const DETECTRON1_URL_PREFIX: &str = "https://dl.fbaipublicfiles.com/detectron";

const IMAGENET: &str = "ImageNetPretrained/";
const C2_DETECTRON_COCO: &str = "Caffe2Detectron/COCO/";

/// ImageNet-pretrained backbones: catalog name -> file under [`DETECTRON1_URL_PREFIX`].
/// MSRA models use `STRIDE_IN_1X1 = True`, the others `False`.
pub(crate) const IMAGENET_MODELS: &[(&str, &str)] = &[
    ("MSRA/R-50", "ImageNetPretrained/MSRA/R-50.pkl"),
    ("MSRA/R-101", "ImageNetPretrained/MSRA/R-101.pkl"),
    ("FAIR/R-50-GN", "ImageNetPretrained/47261647/R-50-GN.pkl"),
    ("FAIR/R-101-GN", "ImageNetPretrained/47592356/R-101-GN.pkl"),
    (
        "FAIR/X-101-32x8d",
        "ImageNetPretrained/20171220/X-101-32x8d.pkl",
    ),
    (
        "FAIR/X-101-64x4d",
        "ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl",
    ),
    (
        "FAIR/X-152-32x8d-IN5k",
        "ImageNetPretrained/25093814/X-152-32x8d-IN5k.pkl",
    ),
];

/// The training set a Detectron1 COCO baseline was trained on (a directory in its URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CocoDataset {
    /// `coco_2014_train` + `coco_2014_valminusminival`.
    Detection,
    /// The keypoint variant of the same splits.
    Keypoints,
}

impl CocoDataset {
    /// The directory name in the URL (with its `:` percent-encoded, as on the server).
    pub(crate) fn url_part(self) -> &'static str {
        match self {
            CocoDataset::Detection => "coco_2014_train%3Acoco_2014_valminusminival",
            CocoDataset::Keypoints => {
                "keypoints_coco_2014_train%3Akeypoints_coco_2014_valminusminival"
            }
        }
    }
}

/// One Detectron1 COCO baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct C2DetectronModel {
    /// The catalog name after `Caffe2Detectron/COCO/`: `<id>/<name>`.
    pub(crate) name: &'static str,
    /// The training run's directory under [`DETECTRON1_URL_PREFIX`].
    pub(crate) run: &'static str,
    /// The training set (a directory in the URL).
    pub(crate) dataset: CocoDataset,
    /// The model type directory: `generalized_rcnn`, or `rpn` for the one RPN-only C4 run.
    pub(crate) kind: &'static str,
}

const fn c2(name: &'static str, run: &'static str) -> C2DetectronModel {
    C2DetectronModel {
        name,
        run,
        dataset: CocoDataset::Detection,
        kind: "generalized_rcnn",
    }
}

/// The Detectron1 COCO baselines.
pub(crate) const C2_DETECTRON_MODELS: &[C2DetectronModel] = &[
    c2(
        "35857197/e2e_faster_rcnn_R-50-C4_1x",
        "35857197/12_2017_baselines/e2e_faster_rcnn_R-50-C4_1x.yaml.01_33_49.iAX0mXvW",
    ),
    c2(
        "35857345/e2e_faster_rcnn_R-50-FPN_1x",
        "35857345/12_2017_baselines/e2e_faster_rcnn_R-50-FPN_1x.yaml.01_36_30.cUF7QR7I",
    ),
    c2(
        "35857890/e2e_faster_rcnn_R-101-FPN_1x",
        "35857890/12_2017_baselines/e2e_faster_rcnn_R-101-FPN_1x.yaml.01_38_50.sNxI7sX7",
    ),
    c2(
        "36761737/e2e_faster_rcnn_X-101-32x8d-FPN_1x",
        "36761737/12_2017_baselines/e2e_faster_rcnn_X-101-32x8d-FPN_1x.yaml.06_31_39.5MIHi1fZ",
    ),
    c2(
        "35858791/e2e_mask_rcnn_R-50-C4_1x",
        "35858791/12_2017_baselines/e2e_mask_rcnn_R-50-C4_1x.yaml.01_45_57.ZgkA7hPB",
    ),
    c2(
        "35858933/e2e_mask_rcnn_R-50-FPN_1x",
        "35858933/12_2017_baselines/e2e_mask_rcnn_R-50-FPN_1x.yaml.01_48_14.DzEQe4wC",
    ),
    c2(
        "35861795/e2e_mask_rcnn_R-101-FPN_1x",
        "35861795/12_2017_baselines/e2e_mask_rcnn_R-101-FPN_1x.yaml.02_31_37.KqyEK4tT",
    ),
    c2(
        "36761843/e2e_mask_rcnn_X-101-32x8d-FPN_1x",
        "36761843/12_2017_baselines/e2e_mask_rcnn_X-101-32x8d-FPN_1x.yaml.06_35_59.RZotkLKI",
    ),
    c2(
        "48616381/e2e_mask_rcnn_R-50-FPN_2x_gn",
        "GN/48616381/04_2018_gn_baselines/e2e_mask_rcnn_R-50-FPN_2x_gn_0416.13_23_38.bTlTI97Q",
    ),
    C2DetectronModel {
        dataset: CocoDataset::Keypoints,
        ..c2(
            "37697547/e2e_keypoint_rcnn_R-50-FPN_1x",
            "37697547/12_2017_baselines/e2e_keypoint_rcnn_R-50-FPN_1x.yaml.08_42_54.kdzV35ao",
        )
    },
    C2DetectronModel {
        kind: "rpn",
        ..c2(
            "35998355/rpn_R-50-C4_1x",
            "35998355/12_2017_baselines/rpn_R-50-C4_1x.yaml.08_00_43.njH5oD9L",
        )
    },
    c2(
        "35998814/rpn_R-50-FPN_1x",
        "35998814/12_2017_baselines/rpn_R-50-FPN_1x.yaml.08_06_03.Axg0r179",
    ),
    c2(
        "36225147/fast_R-50-FPN_1x",
        "36225147/12_2017_baselines/fast_rcnn_R-50-FPN_1x.yaml.08_39_09.L3obSdQ2",
    ),
];

impl C2DetectronModel {
    /// The URL of the model's `model_final.pkl`.
    pub(crate) fn url(&self) -> String {
        format!(
            "{DETECTRON1_URL_PREFIX}/{}/output/train/{}/{}/model_final.pkl",
            self.run,
            self.dataset.url_part(),
            self.kind
        )
    }
}

/// The URL of a `catalog://` name (given without `catalog://`), as detectron2's
/// `ModelCatalog` defines them:
///
/// - `ImageNetPretrained/<name>`: an ImageNet-pretrained backbone, e.g.
///   `ImageNetPretrained/MSRA/R-50`;
/// - `Caffe2Detectron/COCO/<id>/<name>`: a Detectron1 COCO baseline, e.g.
///   `Caffe2Detectron/COCO/35857197/e2e_faster_rcnn_R-50-C4_1x`.
///
/// Every model fused its batch norms into affine layers and expects `PIXEL_STD = [1, 1, 1]`.
/// An unknown name is an error listing the names of its table.
///
/// ```
/// let url = ckpt::resolve::catalog_url("ImageNetPretrained/MSRA/R-50")?;
/// assert!(url.ends_with("/ImageNetPretrained/MSRA/R-50.pkl"));
/// # Ok::<(), ckpt::Error>(())
/// ```
pub fn catalog_url(name: &str) -> Result<String> {
    if let Some(model) = name.strip_prefix(IMAGENET) {
        let file = IMAGENET_MODELS
            .iter()
            .find(|(n, _)| *n == model)
            .map(|(_, file)| *file)
            .ok_or_else(|| {
                unknown(
                    name,
                    IMAGENET,
                    IMAGENET_MODELS.iter().map(|(n, _)| *n).collect(),
                )
            })?;
        return Ok(format!("{DETECTRON1_URL_PREFIX}/{file}"));
    }
    if let Some(model) = name.strip_prefix(C2_DETECTRON_COCO) {
        return C2_DETECTRON_MODELS
            .iter()
            .find(|m| m.name == model)
            .map(C2DetectronModel::url)
            .ok_or_else(|| {
                unknown(
                    name,
                    C2_DETECTRON_COCO,
                    C2_DETECTRON_MODELS.iter().map(|m| m.name).collect(),
                )
            });
    }
    Err(Error::invalid_path(
        format!("catalog://{name}"),
        format!(
            "not in the model catalog: names start with catalog://{IMAGENET} or \
             catalog://{C2_DETECTRON_COCO}"
        ),
    ))
}

fn unknown(name: &str, table: &str, known: Vec<&str>) -> Error {
    Error::invalid_path(
        format!("catalog://{name}"),
        format!(
            "not in the model catalog; known catalog://{table}<name>: {}",
            known.join(", ")
        ),
    )
}

/// The `catalog://` handler: maps a catalog name to its URL and resolves that.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogHandler;

impl PathHandler for CatalogHandler {
    fn prefixes(&self) -> Vec<String> {
        vec!["catalog://".to_string()]
    }

    fn get_local_path(&self, path: &str, lookup: &Lookup<'_>) -> Result<PathBuf> {
        let name = path.strip_prefix("catalog://").unwrap_or(path);
        let url = catalog_url(name)?;
        tracing::info!("Catalog entry {path} points to {url}");
        lookup.get_local_path(&url)
    }
}
