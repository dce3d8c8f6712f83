//! `?` works on ckpt-candle's results in a function returning candle's result, ckpt's
//! result or ckpt-candle's own (this file compiles only if it does), and an error keeps its
//! message on the way.

use candle_core::{DType, Device, Tensor};
use candle_nn::{linear, VarBuilder, VarMap};
use ckpt::Model;
use ckpt_candle::{AdamW, AdamWConfig, VarMapModel};

fn varmap() -> VarMap {
    VarMap::new()
}

/// A candle program's function: ckpt-candle calls take `?`.
fn in_candle_code(order: &[&str]) -> candle_core::Result<usize> {
    let varmap = varmap();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let _fc = linear(2, 3, vb.pp("fc"))?;
    let model = VarMapModel::new(varmap).with_order(order.iter().copied())?;
    let _optimizer = AdamW::from_model(&model, AdamWConfig::default())?;
    let first = model.vars().remove(0).1;
    let file_tensor = ckpt_candle::to_ckpt(first.as_tensor())?;
    let back = ckpt_candle::to_candle(&file_tensor, &Device::Cpu)?;
    Ok(back.elem_count())
}

/// A ckpt program's function: ckpt-candle calls take `?` too.
fn in_ckpt_code(order: &[&str]) -> ckpt::Result<usize> {
    let varmap = varmap();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    linear(2, 3, vb.pp("fc")).map_err(ckpt_candle::Error::from)?;
    let model = VarMapModel::new(varmap).with_order(order.iter().copied())?;
    let _optimizer = AdamW::from_model(&model, AdamWConfig::default())?;
    let state = model.state_dict()?;
    let tensor = ckpt_candle::to_candle(state.get("fc.weight").unwrap(), &Device::Cpu)?;
    let cast = ckpt_candle::cast(&tensor, DType::F64)?;
    Ok(cast.elem_count())
}

/// A function returning ckpt-candle's result takes candle's, ckpt's and ckpt-candle's errors.
fn in_mixed_code() -> ckpt_candle::Result<Tensor> {
    let t = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?; // candle
    let c = ckpt::Tensor::from_slice(&[4f32, 5.], &[2])?; // ckpt
    let _ = ckpt_candle::to_ckpt(&t)?; // ckpt-candle
    let back = ckpt_candle::to_candle(&c, &Device::Cpu)?;
    Ok((back * 2.0)?)
}

#[test]
fn question_mark_works_in_candle_ckpt_and_ckpt_candle_code() {
    let order = ["fc.weight", "fc.bias"];
    assert_eq!(in_candle_code(&order).unwrap(), 6);
    assert_eq!(in_ckpt_code(&order).unwrap(), 6);
    assert_eq!(
        in_mixed_code().unwrap().to_vec1::<f32>().unwrap(),
        [8.0, 10.0]
    );
}

#[test]
fn errors_keep_their_message_through_either_library() {
    let bad_order = ["fc.weight", "fc.wieght"];
    let as_candle = in_candle_code(&bad_order).unwrap_err().to_string();
    let as_ckpt = in_ckpt_code(&bad_order).unwrap_err().to_string();
    for message in [&as_candle, &as_ckpt] {
        assert!(
            message.contains("fc.wieght") && message.contains("does not have"),
            "{message}"
        );
    }
    // A ckpt error seen as a ckpt error is the very error (its variant kept).
    let err = in_ckpt_code(&bad_order).unwrap_err();
    assert!(matches!(err, ckpt::Error::Invalid { .. }), "{err:?}");
    // A candle error through ckpt-candle's type and back is candle's.
    let candle_err = Tensor::new(&[1f32], &Device::Cpu)
        .and_then(|t| t.reshape((2, 2)))
        .unwrap_err();
    let text = candle_err.to_string();
    let through: candle_core::Error = ckpt_candle::Error::from(candle_err).into();
    assert_eq!(through.to_string(), text);
    // A candle error seen as a ckpt error is kept whole in `External`: its message is
    // candle's, and the candle error can be taken back.
    let candle_err = Tensor::new(&[1f32], &Device::Cpu)
        .and_then(|t| t.reshape((2, 2)))
        .unwrap_err();
    let as_ckpt: ckpt::Error = ckpt_candle::Error::from(candle_err).into();
    let first_line = |s: &str| s.lines().next().map(str::to_string);
    assert_eq!(first_line(&as_ckpt.to_string()), first_line(&text));
    match &as_ckpt {
        ckpt::Error::External(inner) => assert!(
            inner.downcast_ref::<candle_core::Error>().is_some(),
            "{inner:?}"
        ),
        other => panic!("{other:?}"),
    }
}
