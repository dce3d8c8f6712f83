//! Path resolution without a network: local paths, query options, the model-zoo prefixes
//! (served from a pre-filled cache) and user handlers.

use std::path::PathBuf;

use ckpt::resolve::catalog_url;
use ckpt::resolve::{HttpCache, PrefixRewrite, QueryOptions, Resolver};

fn offline_resolver(dir: &std::path::Path) -> (Resolver, HttpCache) {
    let cache = HttpCache::new(dir).offline(true);
    (Resolver::with_cache(cache.clone()), cache)
}

/// Puts `content` in the cache as the download of `url`.
fn prefill(cache: &HttpCache, url: &str, content: &[u8]) -> PathBuf {
    let path = cache.cached_path(url).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn local_paths_are_returned_unchanged_even_when_missing() {
    let resolver = Resolver::local_only();
    let resolved = resolver.resolve("output/model_final.pth").unwrap();
    assert_eq!(resolved.path, PathBuf::from("output/model_final.pth"));
    assert_eq!(resolved.options, QueryOptions::default());
}

#[test]
fn file_urls_name_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let (resolver, _) = offline_resolver(dir.path());
    let resolved = resolver.resolve("file:///data/model.pth").unwrap();
    assert_eq!(resolved.path, PathBuf::from("/data/model.pth"));
}

#[test]
fn matching_heuristics_query_is_parsed_and_stripped() {
    let resolver = Resolver::local_only();
    let resolved = resolver
        .resolve("out/model.pth?matching_heuristics=True")
        .unwrap();
    assert_eq!(resolved.path, PathBuf::from("out/model.pth"));
    assert!(resolved.options.matching_heuristics);

    let off = resolver
        .resolve("out/model.pth?matching_heuristics=False")
        .unwrap();
    assert!(!off.options.matching_heuristics);
}

#[test]
fn unknown_query_key_is_unsupported_query_remaining() {
    let resolver = Resolver::local_only();
    let error = resolver
        .resolve("out/model.pth?matching_heuristics=True&foo=bar")
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("Unsupported query remaining: foo=bar"),
        "{message}"
    );
    assert!(message.contains("out/model.pth?"), "{message}");
}

#[test]
fn matching_heuristics_with_a_non_boolean_value_is_an_error() {
    let resolver = Resolver::local_only();
    let error = resolver
        .resolve("model.pth?matching_heuristics=yes")
        .unwrap_err();
    assert!(error.to_string().contains("'yes'"), "{error}");
}

#[test]
fn detectron2_prefix_maps_to_the_model_zoo_url() {
    let dir = tempfile::tempdir().unwrap();
    let (resolver, cache) = offline_resolver(dir.path());
    let url = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl";
    let cached = prefill(&cache, url, b"r50");
    let resolved = resolver
        .resolve("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
        .unwrap();
    assert_eq!(resolved.path, cached);
}

#[test]
fn catalog_prefix_maps_to_the_detectron1_url() {
    let dir = tempfile::tempdir().unwrap();
    let (resolver, cache) = offline_resolver(dir.path());
    let url = "https://dl.fbaipublicfiles.com/detectron/35857197/12_2017_baselines/\
               e2e_faster_rcnn_R-50-C4_1x.yaml.01_33_49.iAX0mXvW/output/train/\
               coco_2014_train%3Acoco_2014_valminusminival/generalized_rcnn/model_final.pkl";
    let cached = prefill(&cache, url, b"c4");
    let resolved = resolver
        .resolve("catalog://Caffe2Detectron/COCO/35857197/e2e_faster_rcnn_R-50-C4_1x?matching_heuristics=True")
        .unwrap();
    assert_eq!(resolved.path, cached);
    assert!(resolved.options.matching_heuristics);
}

#[test]
fn offline_cache_miss_names_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let (resolver, _) = offline_resolver(dir.path());
    let error = resolver
        .resolve("catalog://ImageNetPretrained/FAIR/R-50-GN")
        .unwrap_err();
    assert!(
        error.to_string().contains(
            "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/47261647/R-50-GN.pkl"
        ),
        "{error}"
    );
}

#[test]
fn catalog_urls_follow_the_detectron1_layout() {
    assert_eq!(
        catalog_url("ImageNetPretrained/MSRA/R-101").unwrap(),
        "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-101.pkl"
    );
    assert_eq!(
        catalog_url("Caffe2Detectron/COCO/37697547/e2e_keypoint_rcnn_R-50-FPN_1x").unwrap(),
        "https://dl.fbaipublicfiles.com/detectron/37697547/12_2017_baselines/\
         e2e_keypoint_rcnn_R-50-FPN_1x.yaml.08_42_54.kdzV35ao/output/train/\
         keypoints_coco_2014_train%3Akeypoints_coco_2014_valminusminival/generalized_rcnn/\
         model_final.pkl"
    );
    assert_eq!(
        catalog_url("Caffe2Detectron/COCO/35998355/rpn_R-50-C4_1x").unwrap(),
        "https://dl.fbaipublicfiles.com/detectron/35998355/12_2017_baselines/\
         rpn_R-50-C4_1x.yaml.08_00_43.njH5oD9L/output/train/\
         coco_2014_train%3Acoco_2014_valminusminival/rpn/model_final.pkl"
    );
    assert_eq!(
        catalog_url("Caffe2Detectron/COCO/48616381/e2e_mask_rcnn_R-50-FPN_2x_gn").unwrap(),
        "https://dl.fbaipublicfiles.com/detectron/GN/48616381/04_2018_gn_baselines/\
         e2e_mask_rcnn_R-50-FPN_2x_gn_0416.13_23_38.bTlTI97Q/output/train/\
         coco_2014_train%3Acoco_2014_valminusminival/generalized_rcnn/model_final.pkl"
    );
}

#[test]
fn unknown_catalog_name_lists_the_known_ones() {
    let error = catalog_url("ImageNetPretrained/MSRA/R-152").unwrap_err();
    let message = error.to_string();
    assert!(message.contains("MSRA/R-50"), "{message}");
    let err = catalog_url("Other/thing").unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::InvalidPath { path, .. } if path == "catalog://Other/thing"),
        "{err:?}"
    );
}

#[test]
fn unregistered_scheme_is_an_error_not_a_local_path() {
    let resolver = Resolver::local_only();
    let error = resolver.resolve("s3://bucket/model.pth").unwrap_err();
    assert!(error.to_string().contains("s3://"), "{error}");
}

#[test]
fn handler_cycle_is_an_error_not_a_stack_overflow() {
    let mut resolver = Resolver::local_only();
    resolver.register(PrefixRewrite::new("a://", "b://"));
    resolver.register(PrefixRewrite::new("b://", "a://"));
    let error = resolver.resolve("a://x").unwrap_err();
    assert!(error.to_string().contains("cycle"), "{error}");
}

#[test]
fn cached_url_never_escapes_the_cache_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (resolver, _) = offline_resolver(dir.path());
    let err = resolver.resolve("https://host/a/../../x.pth").unwrap_err();
    assert!(
        matches!(err.root(), ckpt::Error::InvalidPath { .. }),
        "{err:?}"
    );
}
